#[snakemq::service]
pub trait Logger {
    #[signal(ttl = "30 seconds")]
    async fn log(&self, line: String);
}

fn main() {}
