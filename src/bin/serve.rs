//! The development and demo server: `www/` at `/`, `models/` at `/models/`, on 127.0.0.1:8080.
//! tower-http's `ServeDir` does MIME types (`application/wasm`), range requests and conditional
//! requests; this file only adds the headers the page needs: cross-origin isolation (COOP/COEP,
//! so a threaded build can use SharedArrayBuffer), a strict Content-Security-Policy, and
//! `no-cache`: the browser asks each time whether a file changed (a rebuild is seen at once) and
//! keeps what did not, with Chrome's compiled code for the .wasm.

use axum::Router;
use axum::http::{HeaderName, HeaderValue};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; object-src 'none'; base-uri 'none'";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut port = 8080u16;
    let mut root = std::path::PathBuf::from(".");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--port", Some(p)) if p.parse::<u16>().is_ok() => port = p.parse().expect("checked"),
            ("--root", Some(r)) => root = r.into(),
            _ => {
                eprintln!("error: usage: serve [--port N] [--root <repo folder>]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let header = |name: &'static str, value: &'static str| {
        SetResponseHeaderLayer::overriding(HeaderName::from_static(name), HeaderValue::from_static(value))
    };
    let app = Router::new()
        .nest_service("/models", ServeDir::new(root.join("models")))
        .fallback_service(ServeDir::new(root.join("www")))
        .layer(header("cross-origin-opener-policy", "same-origin"))
        .layer(header("cross-origin-embedder-policy", "require-corp"))
        .layer(header("cross-origin-resource-policy", "same-origin"))
        .layer(header("content-security-policy", CSP))
        .layer(header("x-content-type-options", "nosniff"))
        .layer(header("cache-control", "no-cache"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}. Is another server running? Try --port {}.", port + 1);
            return std::process::ExitCode::from(2);
        }
    };
    eprintln!("attnscope: serving on http://{addr}/");
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("error: server stopped: {e}");
        return std::process::ExitCode::from(2);
    }
    std::process::ExitCode::SUCCESS
}
