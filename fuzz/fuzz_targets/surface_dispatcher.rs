//! Any bytes sent to `odu serve` on its socket after a valid handshake: the server answers or
//! skips them, never panics or hangs, ends the connection when its input closes, and still
//! serves the next client.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use odu::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// One server for every input, over a checkout-like directory with no run in it: requests
/// that name runs, nodes or logs are answered with errors, `run.start` is refused (no git
/// checkout), and nothing is ever started.
fn server() -> Arc<Server> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let repo = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("odu-fuzz-surface-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".ci")).unwrap();
        dir
    });
    Server::new(repo.clone(), repo.join(".ci"), repo.join(".ci/odu.sock"), false)
}

fn handshake() -> Vec<u8> {
    odu_proto::Message::request(
        1,
        "handshake",
        serde_json::json!({"protocol": odu_proto::PROTOCOL_VERSION, "build": "fuzz"}),
    )
    .to_frame()
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let server = server();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let serving = tokio::spawn(odu::server::surface::serve_client(theirs, server.clone(), server.admit().expect("room for a client")));
        let (mut reader, mut writer) = ours.into_split();
        let _ = writer.write_all(&handshake()).await;
        let _ = writer.write_all(data).await;
        let _ = writer.shutdown().await;
        let drain = tokio::spawn(async move { tokio::io::copy(&mut reader, &mut tokio::io::sink()).await });
        tokio::time::timeout(std::time::Duration::from_secs(5), serving)
            .await
            .expect("the server ends a connection when its input closes")
            .expect("serving a client never panics");
        drain.abort();

        // The next client is still served: its handshake is answered.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let serving = tokio::spawn(odu::server::surface::serve_client(theirs, server.clone(), server.admit().expect("room for a client")));
        let (mut reader, mut writer) = ours.into_split();
        writer.write_all(&handshake()).await.unwrap();
        let mut first = [0u8; 1];
        tokio::time::timeout(std::time::Duration::from_secs(5), reader.read_exact(&mut first))
            .await
            .expect("the next client's handshake is answered")
            .unwrap();
        drop(writer);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), serving).await;
    });
});
