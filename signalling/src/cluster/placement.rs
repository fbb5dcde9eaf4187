//! Where a participant's media goes (pure: the nodes as the directory lists them in, a node
//! out).
//!
//! A participant goes to a node of its region; a session's participants in one region share a
//! node until it is full (the session's node there, claimed in Redis); past that, or where the
//! region has no node, the least loaded node that can take it. Sessions that span regions, or
//! nodes, are joined by the edges.

use super::NodeInfo;

/// Load over capacity, for comparing nodes of different sizes (a full or empty node: 1).
fn fill(node: &NodeInfo) -> f64 {
    if node.capacity == 0 {
        return 1.0;
    }
    f64::from(node.load) / f64::from(node.capacity)
}

/// Whether `node` can take one more participant.
pub fn has_room(node: &NodeInfo) -> bool {
    node.homes_sessions && node.load < node.capacity
}

/// The node a session new to `region` should live on there: the least filled node of the
/// region with room, else the least filled with room anywhere. Ties go to the lower id, so
/// that instances with the same view choose the same node.
pub fn choose<'a>(nodes: &'a [NodeInfo], region: &str) -> Option<&'a NodeInfo> {
    let best = |in_region: bool| {
        nodes
            .iter()
            .filter(|n| has_room(n) && (!in_region || n.region == region))
            .min_by(|a, b| fill(a).total_cmp(&fill(b)).then_with(|| a.id.cmp(&b.id)))
    };
    best(true).or_else(|| best(false))
}

/// Where a participant of a session goes: the session's node in the region (`claimed`) while
/// it has room, else a node [`choose`] picks.
pub fn place<'a>(
    nodes: &'a [NodeInfo],
    region: &str,
    claimed: Option<&str>,
) -> Option<&'a NodeInfo> {
    claimed
        .and_then(|id| nodes.iter().find(|n| n.id == id))
        .filter(|n| has_room(n))
        .or_else(|| choose(nodes, region))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, region: &str, load: u32, capacity: u32) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            region: region.into(),
            signalling: format!("http://{id}"),
            edge: "127.0.0.1:7001".parse().unwrap(),
            media: "127.0.0.1".parse().unwrap(),
            capacity,
            load,
            homes_sessions: true,
        }
    }

    #[test]
    fn a_new_session_goes_to_the_least_filled_node_of_its_region() {
        let nodes = [
            node("eu-1", "eu", 50, 100),
            node("eu-2", "eu", 10, 100),
            node("us-1", "us", 0, 100),
        ];
        assert_eq!(choose(&nodes, "eu").unwrap().id, "eu-2");
        assert_eq!(choose(&nodes, "us").unwrap().id, "us-1");
        // No node in the region: the least filled anywhere.
        assert_eq!(choose(&nodes, "ap").unwrap().id, "us-1");
    }

    #[test]
    fn participants_share_the_sessions_node_until_it_is_full() {
        let mut nodes = vec![node("eu-1", "eu", 98, 100), node("eu-2", "eu", 0, 100)];
        assert_eq!(place(&nodes, "eu", Some("eu-1")).unwrap().id, "eu-1");
        nodes[0].load = 100;
        assert_eq!(place(&nodes, "eu", Some("eu-1")).unwrap().id, "eu-2");
        // The claimed node is gone (not in the directory): another of the region.
        assert_eq!(place(&nodes, "eu", Some("eu-9")).unwrap().id, "eu-2");
    }

    #[test]
    fn edge_only_and_full_nodes_home_no_session() {
        let mut edge_only = node("eu-0", "eu", 0, 100);
        edge_only.homes_sessions = false;
        let nodes = [edge_only, node("eu-1", "eu", 100, 100)];
        assert!(choose(&nodes, "eu").is_none());
        assert!(place(&nodes, "eu", Some("eu-0")).is_none());
    }

    #[test]
    fn equal_nodes_are_chosen_alike_by_every_instance() {
        let a = [node("b", "eu", 1, 10), node("a", "eu", 1, 10)];
        let b = [node("a", "eu", 1, 10), node("b", "eu", 1, 10)];
        assert_eq!(choose(&a, "eu").unwrap().id, "a");
        assert_eq!(choose(&b, "eu").unwrap().id, "a");
    }
}
