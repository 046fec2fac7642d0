//! TLS and SASL to a real ZooKeeper 3.8: a secure client port with keystores made by the JDK's
//! keytool, client certificates as ACL identities, and SASL DIGEST-MD5 on an ensemble that
//! refuses unauthenticated clients.

mod common;
mod fleet;

use common::*;
use fleet::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use zookeeper_client as zk;

const STOREPASS: &str = "changeit";

/// A CA, a server keystore and truststore (keytool), and for each name a client key (openssl,
/// PEM) with a certificate signed by the CA (keytool).
fn make_pki(dir: &Path, clients: &[&str]) {
    let script = r#"
set -e
P=changeit
kt() { out=$(keytool "$@" -storepass $P -noprompt 2>&1) || { echo "keytool $*: $out" >&2; exit 1; }; }
kt -genkeypair -alias ca -keyalg EC -groupname secp256r1 -dname CN=zkcoord-test-ca -ext bc:c -validity 2 -keystore ca.p12 -storetype PKCS12
kt -exportcert -alias ca -rfc -keystore ca.p12 -file ca.pem
kt -genkeypair -alias server -keyalg EC -groupname secp256r1 -dname CN=127.0.0.1 -validity 2 -keystore server.p12 -storetype PKCS12
kt -certreq -alias server -keystore server.p12 -file server.csr
kt -gencert -alias ca -keystore ca.p12 -infile server.csr -outfile server.pem -rfc -ext san=ip:127.0.0.1 -ext eku=serverAuth,clientAuth -validity 2
cat ca.pem server.pem > server-chain.pem
kt -importcert -alias ca -file ca.pem -keystore server.p12
kt -importcert -alias server -file server-chain.pem -keystore server.p12
kt -importcert -alias ca -file ca.pem -keystore trust.p12 -storetype PKCS12
for c in "$@"; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $c.key -out $c.csr -subj "/CN=$c" 2>/dev/null
  kt -gencert -alias ca -keystore ca.p12 -infile $c.csr -outfile $c.pem -rfc -ext eku=clientAuth -validity 2
  chmod 600 $c.key
done
"#;
    let started = Instant::now();
    let out = Command::new("sh").arg("-c").arg(script).arg("pki").args(clients).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "making keystores failed:\n{}", output_text(&out));
    eprintln!("[pki] CA, server keystore and {} client certificate(s) in {:.1?}", clients.len(), started.elapsed());
}

/// zoo.cfg lines for a secure client port that requires client certificates.
fn tls_server(pki: &Path, secure_port: u16) -> ZkExtra {
    let p = pki.display();
    ZkExtra {
        cfg: format!(
            "secureClientPort={secure_port}\nsecureClientPortAddress=127.0.0.1\n\
             serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
             authProvider.x509=org.apache.zookeeper.server.auth.X509AuthenticationProvider\n\
             ssl.keyStore.location={p}/server.p12\nssl.keyStore.password={STOREPASS}\nssl.keyStore.type=PKCS12\n\
             ssl.trustStore.location={p}/trust.p12\nssl.trustStore.password={STOREPASS}\nssl.trustStore.type=PKCS12\n\
             ssl.clientAuth=need\n"
        ),
        jvm_args: Vec::new(),
    }
}

/// A `[zookeeper.tls]` table (placed just before `[agent]` in a Spec's TOML).
fn with_tls(toml: &str, table: &str) -> String {
    toml.replace("\n[agent]\n", &format!("\n[zookeeper.tls]\n{table}\n[agent]\n"))
}

fn config_for(dir: &Path, name: &str, toml: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, toml.replace("{dir}", &dir.display().to_string())).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_client_certificate_versions_flow_and_nodes_belong_to_the_certificate() {
    let pki = tempfile::tempdir().unwrap();
    make_pki(pki.path(), &["web-1"]);
    let p = pki.path().display().to_string();
    let secure = free_port();
    let zk = ZkEnsemble::single_with(&tls_server(pki.path(), secure));
    let tls_hosts = format!("127.0.0.1:{secure}");
    let table = format!("ca_file = \"{p}/ca.pem\"\ncert_file = \"{p}/web-1.pem\"\nkey_file = \"{p}/web-1.key\"\n");

    // An app host and agent whose only identity is its certificate, with ACLs on.
    let mut spec = Spec::both("web-1", &tls_hosts);
    spec.agent_extra = String::new();
    let toml = with_tls(&spec.toml(), &table)
        + "\n[acl]\nenabled = true\nagents = [\"x509:CN=web-1\"]\napps = [\"x509:CN=web-1\"]\npublishers = [\"x509:CN=web-1\"]\n";
    // [acl] must not end up inside [[app]]: put it before the app table.
    let (head, app) = toml.split_once("\n[[app]]").unwrap();
    let (app, acl) = app.split_once("\n[acl]").unwrap();
    let toml = format!("{head}\n[acl]{acl}\n[[app]]{app}");
    let mut d = Daemon::prepare("web-1");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    d.set_config(&toml);
    d.spawn();

    let cfg = d.config_path().display().to_string();
    let bytes = b"ssl_protocols TLSv1.3;\n".to_vec();
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || ctl_stdin(&["--config", &cfg, "publish", APP, "-"], &bytes)
    })
    .await
    .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("published conf-"), "{}", output_text(&out));
    wait_on_disk(&d, b"ssl_protocols TLSv1.3;\n", Duration::from_secs(20)).await;

    // Seen from the plain port: the version exists and ZooKeeper recorded the certificate as
    // its owner (x509 ids are not masked the way digest hashes are).
    let client = zk_client(&zk.connect_string()).await;
    let v = versions(&client).await.pop().unwrap();
    let (acl, _) = client.get_acl(&format!("/applications/{APP}/{v}")).await.unwrap();
    assert!(acl.iter().any(|a| a.scheme() == "x509" && a.id() == "CN=web-1" && a.permission() == zk::Permission::ALL), "{acl:?}");
    let s = wait_status(&client, "web-1", "ok", Some(&v)).await;
    assert_eq!(s["host"], "web-1");

    // Refused on the secure port, each with a reason and nothing written: no TLS at all, TLS
    // without a client certificate, and a CA that did not sign the server's certificate.
    let other_ca = tempfile::tempdir().unwrap();
    make_pki(other_ca.path(), &[]);
    let dir = d.dir().to_path_buf();
    let plain = config_for(&dir, "plain.toml", &Spec::app("x", &tls_hosts).toml());
    let no_cert = config_for(&dir, "nocert.toml", &with_tls(&Spec::app("x", &tls_hosts).toml(), &format!("ca_file = \"{p}/ca.pem\"\n")));
    let wrong_ca = config_for(
        &dir,
        "wrongca.toml",
        &with_tls(&Spec::app("x", &tls_hosts).toml(), &format!("ca_file = \"{}/ca.pem\"\ncert_file = \"{p}/web-1.pem\"\nkey_file = \"{p}/web-1.key\"\n", other_ca.path().display())),
    );
    let refused: Vec<_> = [plain, no_cert, wrong_ca]
        .into_iter()
        .map(|cfg| std::thread::spawn(move || (cfg.clone(), ctl_stdin(&["--config", &cfg, "publish", APP, "-"], b"intruder\n"))))
        .collect();
    for t in refused {
        let (cfg, out) = t.join().unwrap();
        assert_eq!(out.status.code(), Some(69), "{cfg}: {}", output_text(&out));
        eprintln!("[tls] {cfg} refused: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    assert_eq!(versions(&client).await, vec![v.clone()], "nothing else was published");
    d.term();
}

#[test]
fn a_tls_key_readable_by_others_or_a_missing_ca_is_a_config_error() {
    let pki = tempfile::tempdir().unwrap();
    let p = pki.path();
    std::fs::write(p.join("bad.pem"), "not a certificate\n").unwrap();
    let ca = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=ca"])
        .args(["-keyout", "ca.key", "-out", "ca.pem"])
        .current_dir(p)
        .output()
        .unwrap();
    assert!(ca.status.success(), "{}", output_text(&ca));
    std::fs::write(p.join("c.pem"), "x").unwrap();
    std::fs::write(p.join("c.key"), "x").unwrap();
    let check = |table: String| {
        let d = Daemon::prepare("x");
        d.set_config(&with_tls(&Spec::app("x", "127.0.0.1:1").toml(), &table));
        let out = Command::new(daemon_bin()).args(["--config", &d.config_path().display().to_string(), "--check-config"]).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{}", output_text(&out));
        output_text(&out)
    };
    let e = check(format!("ca_file = \"{}/missing.pem\"\n", p.display()));
    assert!(e.contains("zookeeper.tls") && e.contains("missing.pem"), "{e}");
    let e = check(format!("ca_file = \"{}/bad.pem\"\n", p.display()));
    assert!(e.contains("no usable CA certificate"), "{e}");
    let e = check(format!("ca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/c.pem\"\n", p.display()));
    assert!(e.contains("both cert_file and key_file"), "{e}");
    let e = check(format!("ca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/c.pem\"\nkey_file = \"{0}/c.key\"\n", p.display()));
    assert!(e.contains("c.key is readable by others"), "{e}");
}

/// A server that requires SASL: DIGEST-MD5 users from a JAAS file, unauthenticated clients refused.
fn sasl_server(dir: &Path, users: &[(&str, &str)]) -> ZkExtra {
    let jaas = dir.join("jaas.conf");
    let users: String = users.iter().map(|(u, p)| format!(" user_{u}=\"{p}\"")).collect();
    std::fs::write(&jaas, format!("Server {{\n  org.apache.zookeeper.server.auth.DigestLoginModule required{users};\n}};\n")).unwrap();
    ZkExtra {
        cfg: "authProvider.sasl=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n\
              enforce.auth.enabled=true\nenforce.auth.schemes=sasl\n"
            .into(),
        jvm_args: vec![format!("-Djava.security.auth.login.config={}", jaas.display())],
    }
}

async fn sasl_client(hosts: &str, user: &str, password: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(4))
        .with_sasl(zk::SaslOptions::digest_md5(user.to_string(), password.to_string()))
        .connect(hosts)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sasl_enforced_only_configured_users_get_in_and_acls_name_them() {
    let jaas_dir = tempfile::tempdir().unwrap();
    let zk = ZkEnsemble::single_with(&sasl_server(jaas_dir.path(), &[("agent", "apw"), ("ops", "opw")]));
    let hosts = zk.connect_string();

    let mut d = Daemon::prepare("web-1");
    std::fs::create_dir_all(d.dir().join("www")).unwrap();
    let auth = secret(d.dir(), "zk-auth", "agent:apw\n");
    let toml = Spec::both("web-1", &hosts).toml().replace(
        "start_timeout = \"5s\"\n",
        &format!("start_timeout = \"5s\"\nauth_file = \"{auth}\"\nauth_scheme = \"sasl\"\n"),
    );
    let (head, app) = toml.split_once("\n[[app]]").unwrap();
    d.set_config(&format!(
        "{head}\n[acl]\nenabled = true\nagents = [\"sasl:agent\"]\napps = [\"sasl:agent\"]\npublishers = [\"sasl:ops\"]\n\n[[app]]{app}"
    ));
    d.spawn();
    d.wait_for_log("taking publish requests", Duration::from_secs(20));

    // The publisher authenticates as ops, through the same config keys.
    let ops_dir = tempfile::tempdir().unwrap();
    let ops_auth = secret(ops_dir.path(), "auth", "ops:opw\n");
    let ops_cfg = config_for(
        ops_dir.path(),
        "ops.toml",
        &format!("role = \"agent\"\n[zookeeper]\nhosts = \"{hosts}\"\nauth_file = \"{ops_auth}\"\nauth_scheme = \"sasl\"\n"),
    );
    let out = tokio::task::spawn_blocking({
        let cfg = ops_cfg.clone();
        move || ctl_stdin(&["--config", &cfg, "publish", APP, "-"], b"sasl works\n")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    wait_on_disk(&d, b"sasl works\n", Duration::from_secs(20)).await;

    let admin = sasl_client(&hosts, "agent", "apw").await;
    let v = versions(&admin).await.pop().unwrap();
    let (acl, _) = admin.get_acl(&format!("/applications/{APP}/{v}")).await.unwrap();
    assert!(acl.iter().any(|a| a.scheme() == "sasl" && a.id() == "agent" && a.permission() == zk::Permission::ALL), "{acl:?}");
    let (req_acl, _) = admin.get_acl("/zkcoord/requests").await.unwrap();
    assert!(req_acl.iter().any(|a| a.scheme() == "sasl" && a.id() == "ops" && a.permission().has(zk::Permission::CREATE)), "{req_acl:?}");

    // ops may request, but not write a version itself.
    let ops = sasl_client(&hosts, "ops", "opw").await;
    let e = ops.create(&format!("/applications/{APP}/conf-"), b"direct", &zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all())).await;
    assert_eq!(e.err(), Some(zk::Error::NoAuth));

    // A wrong password, and no authentication at all, get nothing.
    std::fs::write(&ops_auth, "ops:wrong\n").unwrap();
    let out = tokio::task::spawn_blocking(move || ctl_stdin(&["--config", &ops_cfg, "publish", APP, "-"], b"nope\n")).await.unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", output_text(&out));
    assert!(output_text(&out).contains("refused our credentials (Credentials(sasl:ops:***))"), "{}", output_text(&out));
    eprintln!("[sasl] wrong password: {}", String::from_utf8_lossy(&out.stderr).trim());
    let anonymous = zk::Client::connector().with_session_timeout(Duration::from_secs(4)).connect(&hosts).await;
    let refused = match anonymous {
        Err(e) => format!("connect: {e}"),
        Ok(c) => match c.get_data(&format!("/applications/{APP}/{v}")).await {
            Err(e) => format!("read: {e}"),
            Ok(_) => panic!("an unauthenticated client read a version"),
        },
    };
    eprintln!("[sasl] unauthenticated client: {refused}");
    assert_eq!(versions(&admin).await, vec![v], "nothing else was published");
    d.term();
}
