// Every bad method is reported, not only the first one.
#[snakemq::service]
pub trait Calculator {
    fn add(&self, a: i64, b: i64) -> i64;
    async fn sub(&mut self, a: i64, b: i64) -> i64;
    const ZERO: i64;
}

fn main() {}
