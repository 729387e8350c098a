//! Environment overrides: `PORTCULLIS__SECTION__KEY=value` sets `section.key` before the file is
//! read into typed values, so secrets can stay out of the file.

pub(crate) fn set_path(table: &mut toml::Table, path: &str, value: &str) -> Result<(), String> {
    let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
    let Some((last, parents)) = keys.split_last() else {
        return Err("empty override".into());
    };
    let mut t = table;
    for k in parents {
        let entry = t
            .entry(k.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{k:?} is not a table; only table keys can be overridden"))?;
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    t.insert(last.clone(), parsed);
    Ok(())
}
