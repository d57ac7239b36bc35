//! Throwaway check against a real publisher: accepts one RTMP connection on 127.0.0.1:19350,
//! accepts its publish and prints what the session reports.
//!
//! ```sh
//! cargo run -p rtmp --example listen &
//! ffmpeg -re -f lavfi -i testsrc2=size=640x360:rate=30 -c:v libx264 -t 3 \
//!     -f flv rtmp://127.0.0.1:19350/live/test
//! ```

use std::io::{Read, Write};
use std::net::TcpListener;

use rtmp::{Event, Output, Session, SessionConfig};

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:19350")?;
    println!("listening on 127.0.0.1:19350");
    let (mut socket, peer) = listener.accept()?;
    println!("connection from {peer}");
    let mut session = Session::new(SessionConfig::default());
    let mut buf = vec![0; 64 * 1024];
    let (mut frames, mut keyframes, mut bytes) = ([0usize; 2], 0usize, 0usize);
    loop {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            println!("client closed the connection");
            break;
        }
        let result = session.handle_input(&buf[..n]);
        while let Some(out) = session.poll_output() {
            match out {
                Output::Send(b) => socket.write_all(&b)?,
                Output::Event(Event::PublishRequested { request, app, key }) => {
                    println!("publish requested: app={app} key={key}");
                    if let Err(e) = session.accept_publish(request) {
                        println!("accept failed: {e}");
                    }
                }
                Output::Event(Event::Tracks(tracks)) => {
                    for (i, t) in tracks.iter().enumerate() {
                        println!(
                            "track {i}: {} {:?}x{:?} rate={:?} channels={:?} config={} bytes",
                            t.codec.name(),
                            t.width,
                            t.height,
                            t.sample_rate,
                            t.channels,
                            t.config.len()
                        );
                    }
                }
                Output::Event(Event::Frame(f)) => {
                    let n = frames.get(f.track).copied().unwrap_or(0);
                    if n < 4 || (f.keyframe && f.track == 0) {
                        println!(
                            "frame track={} dts={}us pts={}us key={} {} bytes",
                            f.track,
                            f.dts,
                            f.pts,
                            f.keyframe,
                            f.data.len()
                        );
                    }
                    if let Some(c) = frames.get_mut(f.track) {
                        *c += 1;
                    }
                    keyframes += usize::from(f.keyframe && f.track == 0);
                    bytes += f.data.len();
                }
                Output::Event(Event::PublishEnded) => println!("publish ended"),
                Output::Event(other) => println!("{other:?}"),
            }
        }
        if let Err(e) = result {
            println!("session error: {e}");
            break;
        }
    }
    println!(
        "frames per track: {frames:?}, track 0 key frames: {keyframes}, payload bytes: {bytes}"
    );
    Ok(())
}
