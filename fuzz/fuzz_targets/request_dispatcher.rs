//! Any bytes sent to a runner: it answers or skips them and never panics or hangs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (sr, sw) = tokio::io::split(server);
        let serve = tokio::spawn(odu::runner::serve(sr, sw, std::future::pending()));
        let (mut cr, mut cw) = tokio::io::split(client);
        // A valid handshake first, so the fuzz input reaches the dispatcher.
        let hello = odu_proto::Message::request(
            1,
            "handshake",
            serde_json::json!({"protocol": odu_proto::PROTOCOL_VERSION, "build": "fuzz"}),
        );
        let _ = cw.write_all(&hello.to_frame()).await;
        let _ = cw.write_all(data).await;
        let _ = cw.shutdown().await;
        let drain = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut tokio::io::sink()).await });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), serve)
            .await
            .expect("the runner ends when its input closes");
        drain.abort();
    });
});
