//! Field paths written the way Kubernetes' `field.Path.String()` writes them:
//! children joined by `.`, list indexes and map keys in brackets without quotes
//! (`spec.containers[0].resources.limits[cpu]`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn new(root: &str) -> Self {
        // Go renders a root named "" as an empty subscript.
        if root.is_empty() {
            Path("[]".to_string())
        } else {
            Path(root.to_string())
        }
    }

    pub(crate) fn child(&self, name: &str) -> Self {
        if name.is_empty() {
            return self.key("");
        }
        Path(format!("{}.{}", self.0, name))
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        Path(format!("{}[{}]", self.0, i))
    }

    pub(crate) fn key(&self, k: &str) -> Self {
        Path(format!("{}[{}]", self.0, k))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_go() {
        let p = Path::new("spec")
            .child("containers")
            .index(0)
            .child("image");
        assert_eq!(p.to_string(), "spec.containers[0].image");
        assert_eq!(Path::new("data").key("a b").to_string(), "data[a b]");
        assert_eq!(Path::new("").to_string(), "[]");
    }
}
