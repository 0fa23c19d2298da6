#[snakemq::service]
pub trait Store<T> {
    async fn len(&self) -> u64;
}

fn main() {}
