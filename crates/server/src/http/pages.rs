//! The browser SDK and pages, embedded in the binary so `onair` serves them from anywhere.

/// (path, content type, body) for every file under `web/`.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../../../web/index.html"),
    ),
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../../../web/index.html"),
    ),
    (
        "/room.html",
        "text/html; charset=utf-8",
        include_str!("../../../../web/room.html"),
    ),
    (
        "/room.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/room.js"),
    ),
    (
        "/publish.html",
        "text/html; charset=utf-8",
        include_str!("../../../../web/publish.html"),
    ),
    (
        "/publish.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/publish.js"),
    ),
    (
        "/watch.html",
        "text/html; charset=utf-8",
        include_str!("../../../../web/watch.html"),
    ),
    (
        "/watch.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/watch.js"),
    ),
    (
        "/index.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/index.js"),
    ),
    (
        "/dashboard.html",
        "text/html; charset=utf-8",
        include_str!("../../../../web/dashboard.html"),
    ),
    (
        "/dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/dashboard.js"),
    ),
    (
        "/onair.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/onair.js"),
    ),
    (
        "/rtws.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/rtws.js"),
    ),
    (
        "/rtws-player.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/rtws-player.js"),
    ),
    (
        "/rtws-publish.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../web/rtws-publish.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../../../web/style.css"),
    ),
];
