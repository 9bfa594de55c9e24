//! A client of the cf CLI's plugin RPC service: Go `net/rpc` with the gob
//! codec, on `127.0.0.1:<port>`, one connection per call as cf's own
//! plugin library does.
//!
//! net/rpc framing: the client sends `Request{ServiceMethod string; Seq
//! uint64}` and the argument; the server answers `Response{ServiceMethod
//! string; Seq uint64; Error string}` and the reply (a placeholder when
//! `Error` is set).

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use super::gob::{self, Decoder, Encoder, Type, Value};

/// How long one call may take: cf answers from memory, except
/// `AccessToken`, which may refresh the token at UAA first.
const CALL_TIMEOUT: Duration = Duration::from_mins(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a reply may hold.
const MAX_REPLY: usize = 1 << 20;

/// What went wrong talking to cf.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the cf CLI at 127.0.0.1:{port}: {source}")]
    Connect { port: u16, source: std::io::Error },
    #[error("the cf CLI's {method} failed: {source}")]
    Io {
        method: String,
        source: std::io::Error,
    },
    #[error("the cf CLI's {method} answered with a malformed message: {source}")]
    Gob { method: String, source: gob::Error },
    #[error("the cf CLI's {method} answered {what}")]
    Unexpected { method: String, what: String },
    /// The error cf returned (e.g. the token could not be refreshed).
    #[error("{message}")]
    Remote { method: String, message: String },
}

/// The cf CLI's RPC server on one port.
#[derive(Clone, Copy, Debug)]
pub struct Cli {
    port: u16,
}

fn request_type() -> Type {
    Type::Struct(
        "Request",
        vec![("ServiceMethod", Type::String), ("Seq", Type::Uint)],
    )
}

impl Cli {
    pub fn new(port: u16) -> Self {
        Self { port }
    }

    fn address(self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn connect(self) -> Result<TcpStream, Error> {
        TcpStream::connect_timeout(&self.address(), CONNECT_TIMEOUT).map_err(|source| {
            Error::Connect {
                port: self.port,
                source,
            }
        })
    }

    /// Connects and closes, as cf's plugin library does first.
    pub fn ping(self) -> Result<(), Error> {
        self.connect().map(drop)
    }

    /// Calls `CliRpcCmd.<method>(arg)`: the reply.
    pub fn call(self, method: &str, arg_type: &Type, arg: &Value) -> Result<Value, Error> {
        let service_method = format!("CliRpcCmd.{method}");
        let io = |source| Error::Io {
            method: method.to_owned(),
            source,
        };
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(CALL_TIMEOUT)).map_err(io)?;
        let mut encoder = Encoder::new();
        let mut out = encoder.encode(
            &request_type(),
            &Value::fields(vec![Value::string(&service_method), Value::Uint(0)]),
        );
        out.extend(encoder.encode(arg_type, arg));
        stream.write_all(&out).map_err(io)?;

        let mut decoder = Decoder::new();
        let mut buffer = Vec::new();
        let mut values = Vec::new();
        let mut chunk = [0_u8; 4096];
        while values.len() < 2 {
            let parsed = gob::split_message(&buffer).map_err(|source| Error::Gob {
                method: method.to_owned(),
                source,
            })?;
            if let Some((body, rest)) = parsed {
                let value = decoder.message(body).map_err(|source| Error::Gob {
                    method: method.to_owned(),
                    source,
                })?;
                buffer = rest.to_vec();
                values.extend(value);
                continue;
            }
            let n = stream.read(&mut chunk).map_err(io)?;
            if n == 0 {
                return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            if buffer.len() + n > MAX_REPLY {
                return Err(Error::Unexpected {
                    method: method.to_owned(),
                    what: format!("more than {MAX_REPLY} bytes"),
                });
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        let reply = values.pop().expect("two values");
        let response = values.pop().expect("two values");
        let error = Value::text(response.field("Error")).unwrap_or_default();
        if !error.is_empty() {
            return Err(Error::Remote {
                method: method.to_owned(),
                message: error.to_owned(),
            });
        }
        if Value::text(response.field("ServiceMethod")) != Some(service_method.as_str()) {
            return Err(Error::Unexpected {
                method: method.to_owned(),
                what: format!("for another method: {response:?}"),
            });
        }
        Ok(reply)
    }

    /// A method taking `""` and returning a string.
    pub fn string(self, method: &str) -> Result<String, Error> {
        self.reply_as(method, "a string", |reply| match reply {
            Value::String(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// A method taking `""` and returning a bool.
    pub fn boolean(self, method: &str) -> Result<bool, Error> {
        self.reply_as(method, "a bool", |reply| match reply {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    /// A method taking `""`, its reply as what `take` makes of it (`what`
    /// names that in the error when it makes nothing).
    fn reply_as<T>(
        self,
        method: &str,
        what: &str,
        take: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T, Error> {
        let reply = self.call(method, &Type::String, &Value::string(""))?;
        take(&reply).ok_or_else(|| Error::Unexpected {
            method: method.to_owned(),
            what: format!("{reply:?} instead of {what}"),
        })
    }

    /// `GetCurrentSpace` / `GetCurrentOrg`: the embedded `SpaceFields` /
    /// `OrganizationFields`' GUID and name.
    pub fn named(self, method: &str, embedded: &str) -> Result<(String, String), Error> {
        let reply = self.call(method, &Type::String, &Value::string(""))?;
        let unexpected = || Error::Unexpected {
            method: method.to_owned(),
            what: format!("{reply:?} instead of a struct with {embedded}"),
        };
        if !matches!(reply, Value::Struct(_)) {
            return Err(unexpected());
        }
        // An all-empty embedded struct is still sent, as an empty struct.
        let fields = reply
            .field(embedded)
            .cloned()
            .unwrap_or(Value::Struct(vec![]));
        let guid = Value::text(fields.field("Guid")).ok_or_else(unexpected)?;
        let name = Value::text(fields.field("Name")).ok_or_else(unexpected)?;
        Ok((guid.to_owned(), name.to_owned()))
    }
}
