//! onair's server: the one IO crate. Each front-end is a module (`webrtc`, `turn`, `rtmp`, `ws`,
//! `hls`, `recording`, `http`) over the sans-IO protocol crates; `app` starts them all, sharing
//! one stream hub. The `onair` binary is its command line.

pub mod access;
pub mod app;
pub mod config;
pub mod hls;
pub mod http;
pub mod limits;
pub mod net;
pub mod recording;
pub mod rtmp;
pub mod tls;
pub mod turn;
pub mod webhooks;
pub mod webrtc;
pub mod ws;
