pub fn page(_c: &palisade_model::Cluster, _m: &palisade_engine::Matrix) -> String {
    String::new()
}
