//! The standard library modules written in conc, embedded in the binary so `import "std/…"`
//! works wherever the binary is copied.

macro_rules! modules {
    ($($name:literal),* $(,)?) => {
        const MODULES: &[(&str, &str)] = &[$(($name, include_str!(concat!("../stdlib/", $name, ".conc")))),*];
    };
}

modules!("strings");

pub fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, text)| *text)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    MODULES.iter().map(|(n, _)| *n)
}
