#[snakemq::service]
pub trait Stats {
    async fn tally(&self, counts: std::collections::HashMap<String, u8>) -> u64;
}

fn main() {}
