//! Certificates and credentials for the physical clusters, made with the `openssl` command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A CA, one serving certificate for the loopback servers, a service-account key pair and an admin token.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM) clients trust.
    pub ca_cert: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// Serving certificate for 127.0.0.1 / localhost / kubernetes service names.
    pub server_cert: PathBuf,
    /// Serving key.
    pub server_key: PathBuf,
    /// Service-account signing key (RSA).
    pub sa_key: PathBuf,
    /// Service-account public key.
    pub sa_pub: PathBuf,
    /// Static token file (`--token-auth-file`) granting `admin` the `system:masters` group.
    pub token_file: PathBuf,
    /// The admin bearer token.
    pub admin_token: String,
}

impl Pki {
    /// Generates everything into `dir` (created if missing).
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let p = |f: &str| dir.join(f);
        let pki = Self {
            ca_cert: p("ca.crt"),
            ca_key: p("ca.key"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            sa_key: p("sa.key"),
            sa_pub: p("sa.pub"),
            token_file: p("tokens.csv"),
            admin_token: random_token()?,
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "3650",
                    "-subj",
                    "/CN=tmc-testbed-ca",
                ],
            ],
        )?;
        openssl(
            dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=kube-apiserver",
                ],
            ],
        )?;
        std::fs::write(
            p("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n",
        )
        .context("writing server.ext")?;
        openssl(
            dir,
            &[&[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "3650",
                "-extfile",
                "server.ext",
            ]],
        )?;
        openssl(
            dir,
            &[&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "sa.key",
            ]],
        )?;
        openssl(
            dir,
            &[&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]],
        )?;
        std::fs::write(
            &pki.token_file,
            format!("{},admin,admin,system:masters\n", pki.admin_token),
        )
        .with_context(|| format!("writing {}", pki.token_file.display()))?;
        Ok(pki)
    }
}

fn openssl(dir: &Path, parts: &[&[&str]]) -> Result<()> {
    let args: Vec<&str> = parts.concat();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .output()
        .context("running `openssl` (install the openssl command-line tool)")?;
    if !out.status.success() {
        bail!(
            "`openssl {}` failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// 32 hex characters from the kernel's random source.
fn random_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_a_chain_openssl_verifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::generate(dir.path()).expect("generate");
        let out = Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&pki.ca_cert)
            .arg(&pki.server_cert)
            .output()
            .expect("openssl verify");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tokens = std::fs::read_to_string(&pki.token_file).expect("tokens");
        assert!(tokens.starts_with(&pki.admin_token));
        assert_eq!(pki.admin_token.len(), 32);
        assert!(pki.sa_pub.exists() && pki.sa_key.exists());
    }
}
