//! What both clients are: a server at a base URL, reached through a
//! `reqwest::Client` its caller set up (certificates, timeouts), and the
//! one GET they make: a JSON document with an optional bearer token, and
//! the error body of a refusal.

use reqwest::{StatusCode, Url, header};
use serde::de::DeserializeOwned;

/// Why a GET gave no document; `E` is the server's error body.
pub(crate) enum Failure<E> {
    /// The base URL cannot take a path.
    BadUrl,
    Unreachable(reqwest::Error),
    /// An error status, with the error body when it parsed.
    Status(StatusCode, Option<E>),
    /// A success whose body is not the document expected.
    Malformed(reqwest::Error),
}

/// A server at a base URL; Cloud Controller and the director are one.
#[derive(Clone, Debug)]
pub struct Endpoint {
    url: String,
    http: reqwest::Client,
}

impl Endpoint {
    /// `url` is e.g. `https://api.sys.example.com`; a trailing `/` is
    /// dropped.
    pub fn new(url: &str, http: reqwest::Client) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The server's URL, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET URL/PATH?QUERY`, see [`get_json`].
    pub(crate) async fn get_json<T: DeserializeOwned, E: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<T, (String, Failure<E>)> {
        get_json(&self.http, &self.url, path, query, token).await
    }
}

/// Declares the client of one server: an [`Endpoint`] (its URL and HTTP
/// client, by `Deref`) to which the module adds the server's documents.
macro_rules! endpoint_client {
    ($(#[$doc:meta])* $name:ident, $example:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name($crate::http::Endpoint);

        impl std::ops::Deref for $name {
            type Target = $crate::http::Endpoint;

            fn deref(&self) -> &$crate::http::Endpoint {
                &self.0
            }
        }

        impl $name {
            #[doc = concat!("`url` is e.g. `", $example, "`.")]
            pub fn new(url: &str, http: reqwest::Client) -> Self {
                Self($crate::http::Endpoint::new(url, http))
            }
        }
    };
}
pub(crate) use endpoint_client;

/// `GET BASE/PATH?QUERY` (`Accept: application/json`, the bearer `token`
/// when given): the document, or the URL asked and the failure.
async fn get_json<T: DeserializeOwned, E: DeserializeOwned>(
    http: &reqwest::Client,
    base: &str,
    path: &[&str],
    query: &[(&str, &str)],
    token: Option<&str>,
) -> Result<T, (String, Failure<E>)> {
    let Ok(mut url) = Url::parse(base) else {
        return Err((base.to_owned(), Failure::BadUrl));
    };
    let Ok(mut segments) = url.path_segments_mut() else {
        return Err((base.to_owned(), Failure::BadUrl));
    };
    segments.pop_if_empty().extend(path);
    drop(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let shown = url.to_string();
    let mut request = http.get(url).header(header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => return Err((shown, Failure::Unreachable(error))),
    };
    let status = response.status();
    if status.is_success() {
        return response
            .json()
            .await
            .map_err(|error| (shown, Failure::Malformed(error)));
    }
    let body = response.json::<E>().await.ok();
    Err((shown, Failure::Status(status, body)))
}
