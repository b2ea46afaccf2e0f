//! `pylon load-test` against `pylon serve --dev`: a few seconds of a tiny shape must deliver
//! media (the command itself fails when nothing arrives) with bounded loss.

use std::net::{TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_ports() -> (u16, u16) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port())
}

#[test]
fn load_test_smoke_receives_media_from_a_dev_server() {
    let bin = env!("CARGO_BIN_EXE_pylon");
    let (http, udp) = free_ports();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("pylon-load-smoke-{http}.log"))).unwrap();
    let _server = Killed(
        Command::new(bin)
            .args([
                "serve",
                "--dev",
                "--port",
                &http.to_string(),
                "--udp-port",
                &udp.to_string(),
                // ICE/TCP is not what this test is about: off, so no third port is needed.
                "--tcp-port",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("pylon serve starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new(bin)
        .args([
            "load-test",
            "--url",
            &format!("ws://127.0.0.1:{http}"),
            "--api-key",
            "devkey",
            "--api-secret",
            "secret",
            "--publishers",
            "2",
            "--subscribers",
            "1",
            "--duration",
            "3s",
            "--json",
        ])
        .output()
        .expect("load-test runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load-test failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary["joined"], 3, "{summary}");
    // Each of 2 publishers sends audio and video; each is received by the other publisher
    // and by the subscriber: 2 x 2 x 2 = 8 subscribed tracks.
    assert_eq!(summary["tracks"], 8, "{summary}");
    let packets = summary["packets"].as_u64().unwrap();
    assert!(packets > 500, "only {packets} packets arrived: {summary}");
    let loss = summary["loss_pct"].as_f64().unwrap();
    assert!(loss < 20.0, "loss {loss}% on loopback: {summary}");
    assert!(
        summary["video_kbps_per_track"].as_f64().unwrap() > 100.0,
        "{summary}"
    );
}
