// Inside a Vec or an Option the error points at the element type.
pub struct Point {
    pub x: i64,
    pub y: i64,
}

#[snakemq::service]
pub trait Geometry {
    async fn centre(&self, points: Vec<Point>) -> Option<Point>;
}

fn main() {}
