#[snakemq::service]
pub trait Logger {
    #[signal(persistent = true)]
    async fn log(&self, line: String);
}

fn main() {}
