#[snakemq::service]
pub trait Calculator {
    async fn add(&self, mut a: i64, b: i64) -> i64;
}

fn main() {}
