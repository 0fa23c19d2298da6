#[snakemq::service]
pub trait Logger {
    #[signal(retries = 3)]
    async fn log(&self, line: String);
}

fn main() {}
