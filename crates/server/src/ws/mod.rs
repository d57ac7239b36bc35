//! Streams over WebSockets: RTWebSocket (`/rtws/…`, both media mappings: TC in rtws.rs, CMAF in
//! rtws_cmaf.rs) and the plain WebSocket player path (`/ws/…`).

pub mod plain;
pub mod rtws;
pub mod rtws_cmaf;
