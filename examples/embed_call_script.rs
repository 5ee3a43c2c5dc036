//! A host that compiles a script once and calls its functions with arguments.
use conc::{Engine, Value};

pub fn main() {
    let mut engine = Engine::new();
    let program = engine
        .compile(
            "pricing.conc",
            r#"
            let tax_rate = 0.2
            fn total(prices) { sum(prices) * (1 + tax_rate) }
            fn label(name, amount) { "{name}: {amount:.2}" }
            "#,
        )
        .expect("the script compiles");
    engine.run(&program).expect("the script's top level runs");

    let prices = Value::list(vec![Value::Float(10.0), Value::Float(5.5)]);
    let total = engine.call_fn("total", vec![prices]).expect("total() runs");
    let label = engine.call_fn("label", vec![Value::str("basket"), total]).expect("label() runs");
    println!("{label}");
    assert_eq!(label, Value::str("basket: 18.60"));

    // Globals can be read and changed from the host between calls.
    engine.set_global("tax_rate", Value::Float(0.0));
    let untaxed = engine.call_fn("total", vec![Value::list(vec![Value::Int(3), Value::Int(4)])]).unwrap();
    assert_eq!(untaxed, Value::Float(7.0));
}
