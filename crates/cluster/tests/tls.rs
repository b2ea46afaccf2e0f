//! `use_tls`: the directory talks to Redis over TLS (rustls), verifying the server against
//! the system's roots, which `SSL_CERT_FILE` can point at a private CA.

mod common;

use common::*;
use pylon_cluster::{DirectoryError, Lease, RedisConfig};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pylon test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[tokio::test]
async fn the_directory_talks_to_redis_over_tls() {
    let dir = std::env::temp_dir().join(format!("pylon-cluster-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_pki = pki();
    let (ca, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&ca, &server_pki.ca_pem).unwrap();
    std::fs::write(&cert, &server_pki.cert_pem).unwrap();
    std::fs::write(&key, &server_pki.key_pem).unwrap();
    let tls_port = free_port();
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_string();
    let redis = RedisServer::start_with(vec![
        "--port".into(),
        "0".into(),
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path(&cert),
        "--tls-key-file".into(),
        path(&key),
        "--tls-ca-cert-file".into(),
        path(&ca),
        "--tls-auth-clients".into(),
        "no".into(),
    ]);

    let yaml = format!("address: 127.0.0.1:{tls_port}\nuse_tls: true\n");
    let target = serde_yaml::from_str::<RedisConfig>(&yaml)
        .unwrap()
        .target()
        .unwrap();
    let a = directory(&target, "node-a");

    // Roots that do not include the server's CA: the connection fails, classified, no panic.
    let stranger = dir.join("stranger.pem");
    std::fs::write(&stranger, pki().ca_pem).unwrap();
    std::env::set_var("SSL_CERT_FILE", &stranger);
    let e = a.probe().await.unwrap_err();
    assert!(matches!(e, DirectoryError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");

    std::env::set_var("SSL_CERT_FILE", &ca);
    a.probe().await.unwrap();
    assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Acquired);
    assert_eq!(a.nodes().await.unwrap().len(), 1);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
