//! The SDK as a page on another origin loads it: CORS, content types, caching and ETags.

mod common;

use common::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Response {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on a fresh connection, with extra header lines.
async fn get(base: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req += &format!("{n}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_files_are_served_cross_origin_with_etags() {
    let srv = server("sdk-files", Default::default()).await;
    let origin = ("Origin", "https://app.example.com");
    for (path, mime, source) in [
        (
            "/sdk/webrtcai.js",
            "text/javascript; charset=utf-8",
            include_str!("../../sdk/webrtcai.js"),
        ),
        (
            "/sdk/webrtcai.d.ts",
            "application/typescript; charset=utf-8",
            include_str!("../../sdk/webrtcai.d.ts"),
        ),
    ] {
        let r = get(&srv.http, "GET", path, &[origin]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(mime), "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(
            r.header("cache-control")
                .is_some_and(|c| c.contains("no-cache")),
            "{path}: {:?}",
            r.header("cache-control")
        );
        assert_eq!(r.body, source, "{path}");
        // A strong validator: quoted, no W/ prefix.
        let etag = r
            .header("etag")
            .unwrap_or_else(|| panic!("{path}: no ETag"));
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
            "{etag}"
        );

        // Same contents, same tag; a matching If-None-Match gets 304 without a body but with
        // the headers a cross-origin cache needs.
        let again = get(&srv.http, "GET", path, &[origin]).await;
        assert_eq!(again.header("etag"), Some(etag));
        for inm in [etag.to_owned(), format!("\"other\", W/{etag}"), "*".into()] {
            let r = get(&srv.http, "GET", path, &[origin, ("If-None-Match", &inm)]).await;
            assert_eq!(r.status, 304, "{path} If-None-Match: {inm}");
            assert_eq!(r.body, "");
            assert_eq!(r.header("etag"), Some(etag));
            assert_eq!(r.header("access-control-allow-origin"), Some("*"));
            assert!(r.header("cache-control").is_some());
        }
        let r = get(
            &srv.http,
            "GET",
            path,
            &[origin, ("If-None-Match", "\"stale\"")],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, source);

        let head = get(&srv.http, "HEAD", path, &[origin]).await;
        assert_eq!(head.status, 200);
        assert_eq!(head.header("etag"), Some(etag));
        assert_eq!(head.header("access-control-allow-origin"), Some("*"));
    }

    // The two files have different tags.
    let js = get(&srv.http, "GET", "/sdk/webrtcai.js", &[]).await;
    let dts = get(&srv.http, "GET", "/sdk/webrtcai.d.ts", &[]).await;
    assert_ne!(js.header("etag"), dts.header("etag"));

    // The demo app is same-origin only: no CORS header there.
    let demo = get(&srv.http, "GET", "/", &[origin]).await;
    assert_eq!(demo.status, 200);
    assert_eq!(demo.header("access-control-allow-origin"), None);
    assert!(demo.header("etag").is_some());
    let missing = get(&srv.http, "GET", "/sdk/nope.js", &[origin]).await;
    assert_eq!(missing.status, 404);
}
