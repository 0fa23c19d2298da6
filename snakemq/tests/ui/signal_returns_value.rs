#[snakemq::service]
pub trait Logger {
    #[signal]
    async fn log(&self, line: String) -> bool;
}

fn main() {}
