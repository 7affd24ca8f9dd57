//! The syslog sink: RFC 5424 messages over TLS (RFC 5425), octet-counted on one kept-open
//! connection. Syslog has no acknowledgement, so "delivered" means written and flushed to the
//! TLS stream; a broken connection fails the batch, which is sent again on a new one
//! (receivers drop repeats by the `id` in the structured data).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::service::audit_log::AuditEventView;

/// Private enterprise number reserved for documentation (RFC 5612): structured-data ids of
/// our own need one; this one never clashes with a real vendor's.
const SD_ID: &str = "agentsecretstore@32473";
/// Facility 13, "log audit".
const FACILITY: u8 = 13;

/// `host:port` and the TLS settings of a `tls://host:port` sink.
pub struct SyslogTarget {
    host: String,
    port: u16,
    connector: TlsConnector,
}

impl SyslogTarget {
    /// From the sink's URL (`tls://host[:6514]`) and optional extra CA (PEM).
    pub fn new(url: &str, ca_pem: Option<&[u8]>) -> Result<SyslogTarget, String> {
        let url = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
        if url.scheme() != "tls" {
            return Err("a syslog sink's url is tls://host:port".into());
        }
        let host = url.host_str().ok_or("the url has no host")?.to_owned();
        let port = url.port().unwrap_or(6514);
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(SyslogTarget {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    pub async fn connect(&self) -> Result<TlsStream<TcpStream>, String> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(5),
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(10), self.connector.connect(name, tcp))
            .await
            .map_err(|_| "the TLS handshake timed out".to_owned())?
            .map_err(|e| e.to_string())
    }
}

/// A structured-data parameter value: `"`, `\` and `]` escaped (RFC 5424 section 6.3.3).
fn sd_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if field.is_empty() {
        "-".into()
    } else {
        field
    }
}

/// One event as an RFC 5424 message: severity informational (warning for a failure), the
/// event type as MSGID, its id, tenant and position as structured data, the JSON as MSG.
pub fn message(hostname: &str, event: &AuditEventView) -> Result<String, serde_json::Error> {
    let severity = if event.success { 6 } else { 4 };
    let json = serde_json::to_string(event)?;
    Ok(format!(
        "<{}>1 {} {} agent-secret-store - {} [{SD_ID} id=\"{}\" tenant=\"{}\" seq=\"{}\"] {json}",
        FACILITY * 8 + severity,
        event.timestamp,
        header_field(hostname, 255),
        header_field(&event.event_type, 32),
        sd_value(&event.id),
        sd_value(&event.tenant_id),
        event.seq,
    ))
}

/// The batch as octet-counted frames (`LEN SP MSG`, RFC 5425 section 4.3).
pub fn frames(hostname: &str, events: &[AuditEventView]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::new();
    for event in events {
        let msg = message(hostname, event)?;
        out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
        out.extend_from_slice(msg.as_bytes());
    }
    Ok(out)
}

/// Writes `bytes` and flushes; an error means the connection is unusable.
pub async fn write_all(stream: &mut TlsStream<TcpStream>, bytes: &[u8]) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(15), async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| "writing timed out".to_owned())?
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn messages_are_rfc5424_with_escaped_structured_data() {
        let event = AuditEventView {
            id: "0190c0de-0000-7000-8000-000000000001".into(),
            tenant_id: "t\"]\\x".into(),
            seq: 7,
            event_type: "secret.read".into(),
            actor: "token:x".into(),
            ip: None,
            user_agent: Some("a b".into()),
            path: None,
            destination_host: None,
            success: false,
            reason: None,
            timestamp: "2026-12-05T03:00:00.123456Z".into(),
            prev_hash: "00".into(),
            hash: "11".into(),
        };
        let msg = message("cp 1", &event).unwrap();
        assert!(
            msg.starts_with("<108>1 2026-12-05T03:00:00.123456Z cp1 agent-secret-store - secret.read [agentsecretstore@32473 id=\"0190c0de-0000-7000-8000-000000000001\" tenant=\"t\\\"\\]\\\\x\" seq=\"7\"] {"),
            "{msg}"
        );
        let framed = frames("cp", std::slice::from_ref(&event)).unwrap();
        let text = String::from_utf8(framed).unwrap();
        let (len, rest) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
    }
}
