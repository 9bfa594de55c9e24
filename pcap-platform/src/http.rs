//! What both clients are: a server at a base URL, reached through a
//! `reqwest::Client` its caller set up (certificates, timeouts), the one
//! GET they make (a JSON document with an optional bearer token, and the
//! error body of a refusal), and what such a GET comes to when it fails
//! ([`Error`], in the server's words).

use std::fmt::Debug;

use reqwest::{StatusCode, Url, header};
use serde::de::DeserializeOwned;
use thiserror::Error;

/// A server a client of this crate talks to, as its errors speak of it
/// (declared with [`endpoint_client!`]).
pub trait Server: Debug {
    /// Its name in messages: "Cloud Controller", "the BOSH director".
    const NAME: &'static str;
    /// Whether messages name a request by its path (`GET /v3/apps`, and
    /// the server's URL when it cannot be reached) rather than by its URL.
    const ASKED_BY_PATH: bool;
    /// The body of its error answers.
    type Body: ErrorBody;
}

/// The body of a server's error answers.
pub trait ErrorBody: DeserializeOwned + Debug + Send + Sync {
    /// What it adds to the message of an error status; nothing by default.
    fn detail(&self) -> String {
        String::new()
    }
}

/// What a request to server `S` came to, when not a success.
#[derive(Debug, Error)]
pub enum Error<S: Server> {
    #[error("{url} cannot be a base URL")]
    BadUrl { url: String },
    /// Not reached, or no answer.
    #[error("cannot reach {} at {url}", S::NAME)]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// An error status, with the server's error body when it parsed.
    /// `asked` is what was asked (see [`Server::ASKED_BY_PATH`]).
    #[error(
        "{} answered HTTP {status} to {asked}{}",
        S::NAME,
        body.as_ref().map(ErrorBody::detail).unwrap_or_default()
    )]
    Status {
        asked: String,
        status: StatusCode,
        body: Option<S::Body>,
    },
    /// A success whose body is not the document expected.
    #[error("{} sent a bad answer to {asked}", S::NAME)]
    Malformed {
        asked: String,
        #[source]
        source: reqwest::Error,
    },
}

impl<S: Server> Error<S> {
    /// The error status the server answered with, if it did.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Why a GET gave no document; `E` is the server's error body.
enum Failure<E> {
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

    /// `GET URL/PATH?QUERY` of server `S`, see [`get_json`].
    pub(crate) async fn get<S: Server, T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<T, Error<S>> {
        let (url, failure) = match get_json(&self.http, &self.url, path, query, token).await {
            Ok(document) => return Ok(document),
            Err(failed) => failed,
        };
        let (reached, asked) = if S::ASKED_BY_PATH {
            (self.url.clone(), format!("GET /{}", path.join("/")))
        } else {
            (url.clone(), url)
        };
        Err(match failure {
            Failure::BadUrl => Error::BadUrl { url: reached },
            Failure::Unreachable(source) => Error::Unreachable {
                url: reached,
                source,
            },
            Failure::Status(status, body) => Error::Status {
                asked,
                status,
                body,
            },
            Failure::Malformed(source) => Error::Malformed { asked, source },
        })
    }
}

/// Declares the client of one server: an [`Endpoint`] (its URL and HTTP
/// client, by `Deref`) to which the module adds the server's documents,
/// the [`Server`] it is (its name in messages, how they name requests,
/// its error body) and its `Error`.
macro_rules! endpoint_client {
    (
        $(#[$doc:meta])* $name:ident,
        $example:literal,
        named: $server:literal,
        asked_by_path: $by_path:literal,
        error_body: $body:ty $(,)?
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name($crate::http::Endpoint);

        impl $crate::http::Server for $name {
            const NAME: &'static str = $server;
            const ASKED_BY_PATH: bool = $by_path;
            type Body = $body;
        }

        #[doc = concat!("What a request to ", $server, " came to, when not a success.")]
        pub type Error = $crate::http::Error<$name>;

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
