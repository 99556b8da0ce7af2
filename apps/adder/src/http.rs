//! The HTTP face of the adder: three routes over a [`Store`].
//!
//! - `POST /add` with a number (a decimal integer, optionally surrounded by whitespace) in
//!   the body: `{"total": N, "pod": "<name>"}` with the new total.
//! - `GET /total`: the same shape with the current total.
//! - `GET /healthz`: `ok`, for readiness and liveness probes. It does not touch the store,
//!   so a corrupt or slow total never takes a replica out of its Service.
//!
//! Errors are JSON `{"error": "...", "pod": "..."}`: 400 for a body that is not a number,
//! 409 when the total would overflow, 500 when the store fails (a corrupt file says so), 503
//! when the database stayed unavailable for the whole retry budget (the message says whether
//! the add was certainly not applied or might have been).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::{Method, Request, Response, StatusCode, header};
use serde_json::json;

use crate::store::{Store, StoreError};

/// A number is at most 20 characters; a body much bigger than that is not one.
const MAX_BODY_BYTES: usize = 1024;

/// What every request needs: the total and the name this replica answers with.
pub struct App {
    pub store: Box<dyn Store>,
    /// The pod's name (its hostname, which Kubernetes sets to the pod name).
    pub pod: String,
}

impl App {
    pub fn new(store: Box<dyn Store>, pod: impl Into<String>) -> Arc<Self> {
        Arc::new(App {
            store,
            pod: pod.into(),
        })
    }
}

fn error(app: &App, status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    let body = json!({"error": message.into(), "pod": app.pod});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn total_response(app: &App, total: i64) -> Response<Full<Bytes>> {
    // Written by hand so the total comes first, as people read it (serde_json sorts keys).
    let body = format!(
        "{{\"total\":{total},\"pod\":{}}}",
        serde_json::Value::from(app.pod.as_str())
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn store_error(app: &App, e: &StoreError) -> Response<Full<Bytes>> {
    let status = match e {
        StoreError::Overflow { .. } => StatusCode::CONFLICT,
        StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::Database(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        StoreError::Unavailable { .. } | StoreError::Unknown { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    error(app, status, e.to_string())
}

/// Parses an add's body: one integer, whitespace around it allowed.
pub fn parse_amount(body: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("the body must be a number to add, e.g. `1`".into());
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not an integer between -2^63 and 2^63-1"))
}

/// Runs a store call on the blocking pool: the file mode waits in `flock` and `fsync`, which
/// must not stall the runtime's worker threads (and with them every other connection).
async fn blocking(
    app: &Arc<App>,
    call: impl FnOnce(&dyn Store) -> Result<i64, StoreError> + Send + 'static,
) -> Response<Full<Bytes>> {
    let shared = app.clone();
    match tokio::task::spawn_blocking(move || call(shared.store.as_ref())).await {
        Ok(Ok(total)) => total_response(app, total),
        Ok(Err(e)) => store_error(app, &e),
        Err(e) => error(
            app,
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store call failed: {e}"),
        ),
    }
}

/// Answers one request.
pub async fn handle<B>(
    request: Request<B>,
    app: Arc<App>,
) -> Result<Response<Full<Bytes>>, Infallible>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let response = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/add") => match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Err(e) => error(
                &app,
                StatusCode::BAD_REQUEST,
                format!("cannot read the body (at most {MAX_BODY_BYTES} bytes): {e}"),
            ),
            Ok(collected) => match parse_amount(&collected.to_bytes()) {
                Err(message) => error(&app, StatusCode::BAD_REQUEST, message),
                Ok(amount) => blocking(&app, move |store| store.add(amount)).await,
            },
        },
        (&Method::GET, "/total") => blocking(&app, |store| store.total()).await,
        (&Method::GET, "/healthz") => Response::new(Full::new(Bytes::from_static(b"ok\n"))),
        (_, "/add" | "/total" | "/healthz") => {
            error(&app, StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, path) => error(&app, StatusCode::NOT_FOUND, format!("no route {path}")),
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::{FileStore, MemoryStore};

    async fn call(app: &Arc<App>, method: Method, path: &str, body: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = handle(request, app.clone()).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn amounts_parse_as_integers_only() {
        assert_eq!(parse_amount(b"1"), Ok(1));
        assert_eq!(parse_amount(b" -42\n"), Ok(-42));
        assert!(parse_amount(b"").is_err());
        assert!(parse_amount(b"1.5").is_err());
        assert!(parse_amount(b"one").is_err());
        assert!(parse_amount(b"99999999999999999999").is_err());
        assert!(parse_amount(b"\xff").is_err());
    }

    #[tokio::test]
    async fn routes_answer_with_the_total_and_the_pod() {
        let app = App::new(Box::new(MemoryStore::new()), "adder-abc");
        let (status, body) = call(&app, Method::POST, "/add", "5").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, r#"{"total":5,"pod":"adder-abc"}"#);
        let (_, body) = call(&app, Method::POST, "/add", "2\n").await;
        assert_eq!(json(&body)["total"], 7);
        let (status, body) = call(&app, Method::GET, "/total", "").await;
        assert_eq!((status, json(&body)["total"].clone()), (200, json!(7)));
        assert_eq!(call(&app, Method::GET, "/healthz", "").await.0, 200);
    }

    #[tokio::test]
    async fn bad_requests_are_refused_and_change_nothing() {
        let app = App::new(Box::new(MemoryStore::new()), "p");
        let (status, body) = call(&app, Method::POST, "/add", "x").await;
        assert_eq!(status, 400);
        assert!(json(&body)["error"].as_str().unwrap().contains("integer"));
        let huge = "1".repeat(MAX_BODY_BYTES + 1);
        assert_eq!(call(&app, Method::POST, "/add", &huge).await.0, 400);
        assert_eq!(call(&app, Method::GET, "/add", "").await.0, 405);
        assert_eq!(call(&app, Method::POST, "/total", "").await.0, 405);
        assert_eq!(call(&app, Method::GET, "/nope", "").await.0, 404);
        call(&app, Method::POST, "/add", &i64::MAX.to_string()).await;
        assert_eq!(call(&app, Method::POST, "/add", "1").await.0, 409);
        let (_, body) = call(&app, Method::GET, "/total", "").await;
        assert_eq!(json(&body)["total"], i64::MAX);
    }

    #[tokio::test]
    async fn a_corrupt_file_is_a_500_that_says_so_and_health_stays_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("total");
        std::fs::write(&path, "garbage").unwrap();
        let app = App::new(Box::new(FileStore::new(&path)), "p");
        let (status, body) = call(&app, Method::POST, "/add", "1").await;
        assert_eq!(status, 500);
        let message = json(&body)["error"].as_str().unwrap().to_string();
        assert!(
            message.contains("corrupt") && message.contains("total"),
            "{message}"
        );
        assert_eq!(call(&app, Method::GET, "/total", "").await.0, 500);
        assert_eq!(call(&app, Method::GET, "/healthz", "").await.0, 200);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage");
    }
}
