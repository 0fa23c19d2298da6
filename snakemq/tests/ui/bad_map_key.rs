#[snakemq::service]
pub trait Stats {
    async fn histogram(&self, buckets: std::collections::HashMap<f64, u64>) -> u64;
}

fn main() {}
