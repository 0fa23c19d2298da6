#[snakemq::service]
pub trait Memory {
    async fn peek(&self, at: *const u8) -> u8;
}

fn main() {}
