#[snakemq::service]
pub trait Geometry {
    async fn origin(&self) -> (f64, f64);
}

fn main() {}
