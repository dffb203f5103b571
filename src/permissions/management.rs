//! Management API permissions: each root field of a management operation maps to a permission
//! name in Hygraph's style by the table below; a field not in the table is denied unless the
//! principal holds the wildcard `*`.

/// (field name prefix or exact name, permission). Matched in order; exact names first.
const TABLE: &[(&str, &str)] = &[
    ("viewer", "PROJECT_READ"),
    ("project", "PROJECT_READ"),
    ("environment", "ENVIRONMENT_READ"),
    ("createModel", "MODEL_CREATE"),
    ("updateModel", "MODEL_UPDATE"),
    ("deleteModel", "MODEL_DELETE"),
    ("createComponent", "COMPONENT_CREATE"),
    ("updateComponent", "COMPONENT_UPDATE"),
    ("deleteComponent", "COMPONENT_DELETE"),
    ("createEnumeration", "ENUMERATION_CREATE"),
    ("updateEnumeration", "ENUMERATION_UPDATE"),
    ("deleteEnumeration", "ENUMERATION_DELETE"),
    ("createStage", "STAGE_CREATE"),
    ("updateStage", "STAGE_UPDATE"),
    ("deleteStage", "STAGE_DELETE"),
    ("createLocale", "LOCALE_CREATE"),
    ("updateLocale", "LOCALE_UPDATE"),
    ("deleteLocale", "LOCALE_DELETE"),
    ("createWebhook", "WEBHOOK_CREATE"),
    ("updateWebhook", "WEBHOOK_UPDATE"),
    ("deleteWebhook", "WEBHOOK_DELETE"),
    ("deleteField", "FIELD_DELETE"),
    ("submitBatchChanges", "MODEL_UPDATE"),
    ("__typename", ""),
];

/// Every permission name the table knows (with the family names), sorted, then `*`: what the
/// management screens list as switches.
pub fn catalogue() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TABLE
        .iter()
        .map(|(_, p)| *p)
        .chain(["FIELD_CREATE", "FIELD_UPDATE"])
        .filter(|p| !p.is_empty())
        .collect();
    names.sort_unstable();
    names.dedup();
    names.push("*");
    names
}

/// What a new token starts with (the CMS's "basic" management permissions: reading the
/// project and its environments).
pub const BASIC: [&str; 2] = ["ENVIRONMENT_READ", "PROJECT_READ"];

/// A one-line description of a permission name for the screens.
pub fn describe(name: &str) -> String {
    if name == "*" {
        return "Every management permission, including reads of credentials (tokens, secrets)"
            .into();
    }
    let Some((noun, verb)) = name.rsplit_once('_') else {
        return name.to_string();
    };
    let verb = match verb {
        "READ" => "Read",
        "CREATE" => "Create",
        "UPDATE" => "Update",
        "DELETE" => "Delete",
        other => other,
    };
    let noun = noun.to_ascii_lowercase();
    if noun == "project" {
        format!("{verb} the project")
    } else {
        format!("{verb} {noun}s")
    }
}

/// Field-name families: `create…Field` → FIELD_CREATE, `update…Field` → FIELD_UPDATE.
fn family(field: &str) -> Option<&'static str> {
    if field.ends_with("Field") {
        if field.starts_with("create") {
            return Some("FIELD_CREATE");
        }
        if field.starts_with("update") {
            return Some("FIELD_UPDATE");
        }
    }
    None
}

/// The permission a management root field needs; `Some("")` needs nothing; `None`: unknown.
pub fn permission_for(field: &str) -> Option<&'static str> {
    TABLE
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, p)| *p)
        .or_else(|| family(field))
}

/// The first root field the principal may not run, with the permission it lacks (or `None`
/// when the field is not in the table).
pub fn check<'a>(
    fields: impl IntoIterator<Item = &'a str>,
    granted: &[String],
) -> Result<(), (String, Option<&'static str>)> {
    let wildcard = granted.iter().any(|g| g == "*");
    for f in fields {
        match permission_for(f) {
            Some("") => {}
            Some(p) if wildcard || granted.iter().any(|g| g == p) => {}
            Some(p) => return Err((f.to_string(), Some(p))),
            None if wildcard => {}
            None => return Err((f.to_string(), None)),
        }
    }
    Ok(())
}

/// Nested fields that read credentials (`…Token…`, `…secret…`, `password`, `apiKey`): reads
/// hang under `viewer`, whose own permission (`PROJECT_READ`) would otherwise cover them, so
/// these need the wildcard `*`. The safe reading of a Management API whose permission
/// catalogue the gateway does not carry.
const SENSITIVE: [&str; 4] = ["token", "secret", "password", "apikey"];

/// The first nested field name that reads a credential, unless the principal holds `*`.
pub fn check_nested<'a>(
    names: impl IntoIterator<Item = &'a str>,
    granted: &[String],
) -> Result<(), (String, Option<&'static str>)> {
    if granted.iter().any(|g| g == "*") {
        return Ok(());
    }
    for n in names {
        let lower = n.to_ascii_lowercase();
        if SENSITIVE.iter().any(|s| lower.contains(s)) {
            return Err((n.to_string(), Some("*")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_wildcard() {
        assert_eq!(permission_for("createModel"), Some("MODEL_CREATE"));
        assert_eq!(permission_for("createSimpleField"), Some("FIELD_CREATE"));
        assert_eq!(permission_for("dropEverything"), None);
        assert!(check(["createModel"], &["MODEL_CREATE".into()]).is_ok());
        assert_eq!(
            check(["deleteModel"], &["MODEL_CREATE".into()]),
            Err(("deleteModel".into(), Some("MODEL_DELETE")))
        );
        assert_eq!(
            check(["dropEverything"], &["MODEL_CREATE".into()]),
            Err(("dropEverything".into(), None))
        );
        assert!(check(["dropEverything"], &["*".into()]).is_ok());
    }

    #[test]
    fn nested_credential_reads_need_the_wildcard() {
        let read = ["PROJECT_READ".to_string()];
        assert!(check_nested(["project", "environment", "models"], &read).is_ok());
        assert_eq!(
            check_nested(["project", "permanentAuthTokens"], &read),
            Err(("permanentAuthTokens".into(), Some("*")))
        );
        assert!(check_nested(["webhookSecret"], &read).is_err());
        assert!(check_nested(["authToken"], &["*".to_string()]).is_ok());
    }
}
