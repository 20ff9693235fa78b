//! Prints the ClusterNetworkPolicy CustomResourceDefinition generated from the Rust types:
//! `cargo run -p palisade-kube --example crd > deploy/05-crd-clusternetworkpolicy.yaml`.

fn main() {
    print!("{}", palisade_kube::crd::crd_yaml());
}
