//! The HTML page: one file, its style, script and data inline.

use super::graph::Graph;

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The page for `graph`; `title` heads it (the files it was drawn from).
pub fn render(graph: &Graph, title: &str) -> String {
    let data = serde_json::to_string(graph).expect("a graph serializes");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Chokepoint dependency map</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>Chokepoint dependency map</h1>\n<p class=\"source\">{}</p>\n<p class=\"legend\"><span class=\"key allowed\">allowed</span> <span class=\"key denied\">denied</span> <span class=\"key staged\">staged: decided otherwise by staged policies</span></p>\n<p id=\"summary\"></p>\n<div id=\"map\"></div>\n<table id=\"edges\"><thead><tr><th>from</th><th>to</th><th>port</th><th>flows</th><th>kind</th><th>decided by</th><th>staged</th><th>via</th></tr></thead><tbody></tbody></table>\n<script type=\"application/json\" id=\"graph\">{}</script>\n<script>\n{SCRIPT}</script>\n</body>\n</html>\n",
        escape_html(title),
        // Inside a script element nothing may look like a closing tag.
        data.replace('<', "\\u003c"),
    )
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::graph::{Edge, EdgeKind, Node};

    #[test]
    fn the_page_is_self_contained_and_its_data_cannot_close_the_script() {
        let graph = Graph {
            groups: vec!["a".into()],
            nodes: vec![Node {
                id: "a/x".into(),
                group: "a".into(),
                label: "</script><img src=x>".into(),
                pods: Default::default(),
                policies: Default::default(),
            }],
            edges: vec![Edge {
                from: "a/x".into(),
                to: "a/x".into(),
                port: 1,
                protocol: "tcp".into(),
                kind: EdgeKind::Allowed,
                count: 1,
                decided_by: Default::default(),
                staged: Default::default(),
                services: Default::default(),
            }],
        };
        let page = render(&graph, "<b>files</b>");
        assert_eq!(page.matches("</script>").count(), 2, "{page}");
        assert!(page.contains("&lt;b&gt;files&lt;/b&gt;"));
        for remote in [
            "src=\"",
            "href=",
            "<link",
            "@import",
            "fetch(",
            "XMLHttpRequest",
            "url(http",
            "url(//",
        ] {
            assert!(!page.contains(remote), "fetches nothing: {remote}");
        }
    }
}
