//! App names by GUID from Cloud Controller's `GET /v3/apps` response, as
//! an operator saves it with `cf curl "/v3/apps?per_page=5000" > apps.json`.

use std::{collections::HashMap, fs, io, path::Path};

use pcap_platform::cloud_controller::{App, Page};

/// GUID → name from a saved `/v3/apps` response.
pub fn read(path: &Path) -> io::Result<HashMap<String, String>> {
    parse(&fs::read_to_string(path)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: not a Cloud Controller /v3/apps response ({e}); save one with \
                 `cf curl \"/v3/apps?per_page=5000\" > apps.json`",
                path.display()
            ),
        )
    })
}

fn parse(json: &str) -> Result<HashMap<String, String>, serde_json::Error> {
    let apps: Page<App> = serde_json::from_str(json)?;
    Ok(apps
        .resources
        .into_iter()
        .map(|app| (app.guid, app.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_v3_apps_resources() {
        let json = r#"{"pagination":{"total_results":2,"next":null},"resources":[
            {"guid":"1ee630fd-528a-4d80-97cd-dea170be759d","name":"frontend","state":"STARTED"},
            {"guid":"9e5d8b0c-0000-4000-8000-000000000002","name":"backend","state":"STOPPED"}]}"#;
        let names = parse(json).expect("parses");
        assert_eq!(names["1ee630fd-528a-4d80-97cd-dea170be759d"], "frontend");
        assert_eq!(names.len(), 2);
        assert!(parse(r#"{"errors":[{"code":10003}]}"#).is_err());
    }
}
