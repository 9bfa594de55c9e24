//! The sweep of multipart uploads left open by a killed API, against a
//! stand-in S3 that answers ListMultipartUploads (s3s-fs, the S3 server of
//! the system tests, answers it with NotImplemented) and records the
//! signed requests it gets: only uploads under the API's prefix that began
//! before the API started are aborted, across pages.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    extract::{Request, State},
    http::StatusCode,
    response::IntoResponse,
    routing::any,
};
use pcap_api::store::{StoreConfig, stale::StaleUploads};

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

const PAGE_1: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>pcap</Bucket>
  <IsTruncated>true</IsTruncated>
  <NextKeyMarker>captures/a/2.pcapng</NextKeyMarker>
  <NextUploadIdMarker>id-2</NextUploadIdMarker>
  <Upload>
    <Key>captures/a/1.pcapng</Key>
    <UploadId>id-1</UploadId>
    <Initiated>2026-01-01T10:00:00.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>captures/a/2.pcapng</Key>
    <UploadId>id-2</UploadId>
    <Initiated>2099-01-01T10:00:00.000Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;

const PAGE_2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>pcap</Bucket>
  <IsTruncated>false</IsTruncated>
  <Upload>
    <Key>captures-other/b/3.pcapng</Key>
    <UploadId>id-3</UploadId>
    <Initiated>2026-01-01T10:00:00Z</Initiated>
  </Upload>
  <Upload>
    <Key>captures/b/odd name+4.pcapng</Key>
    <UploadId>id/4=</UploadId>
    <Initiated>2026-01-02T10:00:00Z</Initiated>
  </Upload>
</ListMultipartUploadsResult>"#;

async fn s3(State(seen): State<Seen>, request: Request) -> impl IntoResponse {
    let signed = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential=test-key/"));
    if !signed {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        )
            .into_response();
    }
    let line = format!("{} {}", request.method(), request.uri());
    seen.0.lock().unwrap().push(line);
    let query = request.uri().query().unwrap_or_default().to_owned();
    match request.method().as_str() {
        "GET" if query.contains("key-marker=") => PAGE_2.into_response(),
        "GET" => PAGE_1.into_response(),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Serves `app` as the S3 endpoint of a store configuration (bucket `pcap`).
async fn store_config(app: Router) -> StoreConfig {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    toml::from_str(&format!(
        "endpoint = \"http://{address}\"\nbucket = \"pcap\"\n\
         access_key_id = \"test-key\"\nsecret_access_key = \"test-secret\"\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn uploads_under_the_prefix_begun_before_the_start_are_aborted() {
    let seen = Seen::default();
    let app = Router::new()
        .route("/{*path}", any(s3))
        .with_state(seen.clone());
    let config = store_config(app).await;
    config.validate().unwrap();
    let stale = StaleUploads::new(&config).unwrap();
    let started = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000); // 2096
    let aborted = stale.abort_begun_before(started).await.unwrap();
    assert_eq!(aborted, 2);

    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "GET /pcap?uploads=&prefix=captures%2F",
            "GET /pcap?uploads=&prefix=captures%2F&key-marker=captures%2Fa%2F2.pcapng&upload-id-marker=id-2",
            "DELETE /pcap/captures/a/1.pcapng?uploadId=id-1",
            "DELETE /pcap/captures/b/odd%20name%2B4.pcapng?uploadId=id%2F4%3D",
        ]
    );
}

#[tokio::test]
async fn a_refusal_names_the_operation_and_s3s_code() {
    let app = Router::new().route(
        "/{*path}",
        any(|| async {
            (
                StatusCode::NOT_IMPLEMENTED,
                "<Error><Code>NotImplemented</Code></Error>",
            )
        }),
    );
    let config = store_config(app).await;
    let error = StaleUploads::new(&config)
        .unwrap()
        .abort_begun_before(SystemTime::now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("ListMultipartUploads")
            && error.contains("501")
            && error.contains("NotImplemented"),
        "{error}"
    );
    assert!(!error.contains("test-secret"), "{error}");
}
