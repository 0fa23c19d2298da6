// A user type must derive prost::Message; the error points at the type in the signature.
pub struct Point {
    pub x: i64,
    pub y: i64,
}

#[snakemq::service]
pub trait Geometry {
    async fn norm(&self, point: Point) -> f64;
}

fn main() {}
