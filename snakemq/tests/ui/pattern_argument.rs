#[snakemq::service]
pub trait Geometry {
    async fn norm(&self, (x, y): (f64, f64)) -> f64;
}

// The trait is still there, with `_` for the pattern.
struct Plane;

impl Geometry for Plane {
    async fn norm(&self, (x, y): (f64, f64)) -> f64 {
        x.hypot(y)
    }
}

fn main() {}
