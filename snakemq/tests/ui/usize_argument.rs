#[snakemq::service]
pub trait Buffer {
    async fn truncate(&self, len: usize);
}

fn main() {}
