#[snakemq::service]
pub trait Calculator {
    fn add(&self, a: i64, b: i64) -> i64;
}

// The trait is still there (without the generated client and server), so an implementation
// adds no errors of its own.
struct Calc;

impl Calculator for Calc {
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn main() {
    let _ = Calc.add(1, 2);
}
