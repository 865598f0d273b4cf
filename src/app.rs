//! The routes: turns a request into a response. For now the health check;
//! the index and file routes build on it.

use crate::http::{Method, Request, Response};

const SUCCESS: &str = "{\"status\":\"success\",\"data\":null}";

/// The request handler given to the HTTP server.
pub fn handle(req: &Request) -> Response {
    match req.path() {
        "/health" => match req.method() {
            Method::Get | Method::Head => Response::new(200)
                .header("Content-Type", "application/json")
                .header("Cache-Control", "no-store")
                .body(SUCCESS),
            _ => method_not_allowed("GET, HEAD"),
        },
        _ => Response::text(404, "not found\n"),
    }
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::text(405, "method not allowed\n").header("Allow", allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases = [
            ("GET", "/health", 200),
            ("HEAD", "/health", 200),
            ("DELETE", "/health", 405),
            ("GET", "/nope", 404),
        ];
        for (method, path, want) in cases {
            let r = handle(&Request::new(method, path));
            assert_eq!(r.status(), want, "{method} {path}");
        }
        let r = handle(&Request::new("GET", "/health"));
        assert_eq!(r.get_header("content-type"), Some("application/json"));
        assert_eq!(r.body_ref().len(), Some(SUCCESS.len() as u64));
        let r = handle(&Request::new("PUT", "/health"));
        assert_eq!(r.get_header("allow"), Some("GET, HEAD"));
    }
}
