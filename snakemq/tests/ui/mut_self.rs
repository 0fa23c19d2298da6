#[snakemq::service]
pub trait Counter {
    async fn bump(&mut self) -> u64;
}

fn main() {}
