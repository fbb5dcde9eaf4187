//! The cluster's certificate authority and the certificates of its nodes.
//!
//! Nodes authenticate each other on every trunk with mutual TLS: each presents a certificate
//! that the cluster's CA signed, naming the node's id as its DNS name, and accepts only such
//! certificates. `webrtcai cluster init` makes the CA once; `webrtcai cluster node <id>` signs
//! a node's certificate with it. The CA's key need not stay on the nodes: each node needs
//! only the CA's certificate, its own certificate and its own key.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::EdgeError;

fn cert_error(e: impl std::fmt::Display) -> EdgeError {
    EdgeError::Certificate(e.to_string())
}

/// A node id, checked to be a DNS label so that it can be a certificate's name and a TLS
/// server name.
pub fn check_node_id(id: &str) -> Result<(), EdgeError> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && !id.starts_with('-')
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EdgeError::BadNodeId(id.to_string()))
    }
}

/// The cluster's certificate authority: signs node certificates.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl ClusterCa {
    /// A new CA named `name` (an ECDSA P-256 key).
    pub fn generate(name: &str) -> Result<ClusterCa, EdgeError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} cluster CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(ClusterCa { cert, key })
    }

    /// The CA from its certificate and key, as [`ClusterCa::cert_pem`] and
    /// [`ClusterCa::key_pem`] wrote them.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, EdgeError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_error)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(cert_error)?;
        // Signing needs the issuer as rcgen holds it: the same name and key as the file's.
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Ok(ClusterCa { cert, key })
    }

    /// The CA's certificate (what every node is given).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's key (kept by whoever adds nodes; never needed on a node).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate for node `id`, valid as a TLS server and client under that name.
    pub fn issue(&self, id: &str) -> Result<NodeCertificate, EdgeError> {
        check_node_id(id)?;
        let key = KeyPair::generate().map_err(cert_error)?;
        let mut params = CertificateParams::new(vec![id.to_string()]).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, id);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(cert_error)?;
        Ok(NodeCertificate {
            node: id.to_string(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A node's certificate and key, in PEM.
#[derive(Clone)]
pub struct NodeCertificate {
    /// The node's id (the certificate's DNS name).
    pub node: String,
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// What a node needs to open and accept trunks: who it is, and whom it trusts.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The node's id, as its certificate names it.
    pub node: String,
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) ca: CertificateDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            node: self.node.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
        }
    }
}

impl NodeIdentity {
    /// From the CA's certificate and the node's certificate and key, in PEM; the node's id is
    /// read from its certificate.
    pub fn from_pem(
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<NodeIdentity, EdgeError> {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(cert_error)?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(cert_error)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(cert_error)?;
        let node = node_of(&cert)?;
        Ok(NodeIdentity {
            node,
            cert,
            key,
            ca,
        })
    }

    /// A node's files: the CA's certificate, the node's certificate and its key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<NodeIdentity, EdgeError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| cert_error(format!("{}: {e}", p.display())))
        };
        NodeIdentity::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }

    /// A node certificate as the CA issued it, with the CA's certificate.
    pub fn from_issued(
        ca: &ClusterCa,
        issued: &NodeCertificate,
    ) -> Result<NodeIdentity, EdgeError> {
        NodeIdentity::from_pem(&ca.cert_pem(), &issued.cert_pem, &issued.key_pem)
    }
}

/// The node a certificate names: its one DNS name.
pub fn node_of(cert: &CertificateDer<'_>) -> Result<String, EdgeError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(cert_error)?;
    let names = parsed
        .subject_alternative_name()
        .map_err(cert_error)?
        .ok_or_else(|| cert_error("the certificate names no node"))?;
    let mut dns = names.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
        _ => None,
    });
    match (dns.next(), dns.next()) {
        (Some(node), None) => {
            check_node_id(&node)?;
            Ok(node)
        }
        _ => Err(cert_error("a node certificate names exactly one node")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_certificate_names_its_node_and_survives_the_ca_reloaded() {
        let ca = ClusterCa::generate("test").unwrap();
        let reloaded = ClusterCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        let issued = reloaded.issue("node-a").unwrap();
        let id = NodeIdentity::from_issued(&ca, &issued).unwrap();
        assert_eq!(id.node, "node-a");
        assert_eq!(node_of(&id.cert).unwrap(), "node-a");
    }

    #[test]
    fn a_node_id_must_be_a_dns_label() {
        for bad in ["", "A", "a.b", "-a", "a-", "a b", &"x".repeat(64)] {
            assert!(
                matches!(check_node_id(bad), Err(EdgeError::BadNodeId(_))),
                "{bad:?}"
            );
        }
        for good in ["a", "eu-1", "n0"] {
            check_node_id(good).unwrap();
        }
        let ca = ClusterCa::generate("test").unwrap();
        assert!(matches!(ca.issue("Node.A"), Err(EdgeError::BadNodeId(_))));
    }
}
