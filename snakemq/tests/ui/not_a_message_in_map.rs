// As a map value the error points at the value type.
pub struct Point {
    pub x: i64,
    pub y: i64,
}

#[snakemq::service]
pub trait Geometry {
    async fn place(&self, points: std::collections::HashMap<String, Point>) -> u32;
}

fn main() {}
