"""YAML training configs, shipped inside the package so `lofi-demo` finds demo.yaml in any install."""
