//! Credentials: ACL users and `requirepass`; wrong credentials are refused (the operator's
//! fault, not transient), and secrets never appear in errors.

mod common;

use common::*;
use pylon_cluster::{DirectoryError, Lease, RedisConfig};

fn target(port: u16, extra: &str) -> pylon_cluster::Target {
    let yaml = format!("address: 127.0.0.1:{port}\n{extra}");
    serde_yaml::from_str::<RedisConfig>(&yaml)
        .unwrap()
        .target()
        .unwrap()
}

#[tokio::test]
async fn acl_users_are_accepted_and_wrong_passwords_refused() {
    let redis = RedisServer::start_with(vec![
        "--requirepass".into(),
        "default-secret".into(),
        "--user".into(),
        "pylon".into(),
        "on".into(),
        ">pylon-secret".into(),
        "~*".into(),
        "&*".into(),
        "+@all".into(),
    ]);

    let user = directory(
        &target(redis.port, "username: pylon\npassword: pylon-secret\ndb: 3\n"),
        "node-a",
    );
    assert_eq!(user.renew(&info(7001)).await.unwrap(), Lease::Acquired);
    let default_user = directory(&target(redis.port, "password: default-secret\ndb: 3\n"), "node-b");
    default_user.renew(&info(7002)).await.unwrap();
    assert_eq!(user.nodes().await.unwrap().len(), 2, "both in db 3");
    let other_db = directory(&target(redis.port, "password: default-secret\n"), "node-c");
    assert!(
        other_db.nodes().await.unwrap().is_empty(),
        "db 0 is another directory"
    );

    for extra in [
        "username: pylon\npassword: wrong-secret\n",
        "password: wrong-secret\n",
        "",
    ] {
        let d = directory(&target(redis.port, extra), "node-x");
        let e = d.renew(&info(7003)).await.unwrap_err();
        assert!(matches!(e, DirectoryError::Refused(_)), "{extra:?}: {e}");
        assert!(!e.is_transient());
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
