//! The plan's graph algorithms, all of them petgraph's: the walk from the root, closures over
//! needs and dependents, cycle detection and the plan's topological order.
//!
//! The graphs are `DiGraph`s whose node indices are positions in a list the caller owns (recipes,
//! tasks), every node added up front; an edge points from what is needed to what needs it.

use petgraph::Direction;
use petgraph::algo::{DfsSpace, has_path_connecting, tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, Dfs, Reversed, Visitable};

/// A graph over positions `0..count` of a list kept elsewhere.
pub(super) type Graph = DiGraph<(), ()>;

/// A graph of `count` nodes and no edges yet.
pub(super) fn with_nodes(count: usize) -> Graph {
    let mut graph = Graph::with_capacity(count, count);
    for _ in 0..count {
        graph.add_node(());
    }
    graph
}

pub(super) fn node(at: usize) -> NodeIndex {
    NodeIndex::new(at)
}

/// Walks breadth first from `root` over `count` nodes, asking `successors` for a node's edges just
/// before the walk follows them, so that only the nodes reached are ever asked (and an error
/// stops the walk where it is met). Successors are followed in the order given. Returns the
/// nodes in the order the walk reached them, `root` first.
pub(super) fn walk<E>(
    count: usize,
    root: usize,
    mut successors: impl FnMut(usize, &mut Vec<usize>) -> Result<(), E>,
) -> Result<Vec<usize>, E> {
    let mut graph = with_nodes(count);
    let mut bfs = Bfs::new(&graph, node(root));
    let mut reached = Vec::new();
    let mut targets = Vec::new();
    // The node at the front of the queue is the next one `Bfs::next` expands: its edges go in
    // first.
    while let Some(&next) = bfs.stack.front() {
        targets.clear();
        successors(next.index(), &mut targets)?;
        // `Graph::neighbors` lists a node's edges newest first: added backwards, they are walked
        // in the order given.
        for &target in targets.iter().rev() {
            graph.add_edge(next, node(target), ());
        }
        bfs.next(&graph);
        reached.push(next.index());
    }
    Ok(reached)
}

/// Every node reachable from `starts` along the edges (`Outgoing`: what needs them, and so on)
/// or against them (`Incoming`: what they need, and so on), the starts included, as a mask over
/// the node indices.
pub(super) fn closure<N, E>(
    graph: &DiGraph<N, E>,
    starts: impl IntoIterator<Item = usize>,
    direction: Direction,
) -> Vec<bool> {
    let mut reached = vec![false; graph.node_count()];
    let mut dfs = Dfs::empty(graph);
    for start in starts {
        dfs.move_to(node(start));
        match direction {
            Direction::Outgoing => {
                while let Some(found) = dfs.next(graph) {
                    reached[found.index()] = true;
                }
            }
            Direction::Incoming => {
                while let Some(found) = dfs.next(Reversed(graph)) {
                    reached[found.index()] = true;
                }
            }
        }
    }
    reached
}

/// A topological order of the nodes, each after every node it is reached from; on a cycle, the
/// smallest node index on one.
pub(super) fn topological<N, E>(graph: &DiGraph<N, E>) -> Result<Vec<usize>, usize> {
    match toposort(graph, None) {
        Ok(order) => Ok(order.into_iter().map(NodeIndex::index).collect()),
        Err(cycle) => Err(smallest_on_cycle(graph, cycle.node_id())),
    }
}

/// The smallest node index in the strongly connected component of `on`, a node on a cycle: the
/// name a cycle is reported by does not hang on where a search happened to enter it.
fn smallest_on_cycle<N, E>(graph: &DiGraph<N, E>, on: NodeIndex) -> usize {
    tarjan_scc(graph)
        .into_iter()
        .find(|component| component.contains(&on))
        .and_then(|component| component.into_iter().map(NodeIndex::index).min())
        .unwrap_or(on.index())
}

/// The nodes ordered by rank, the longest path to a node from one nothing points to, then by
/// index; on a cycle, the smallest node index on one. Any topological order gives the same ranks,
/// so the result does not depend on the one petgraph picks.
pub(super) fn ranked<N, E>(graph: &DiGraph<N, E>) -> Result<Vec<usize>, usize> {
    let mut rank = vec![0_usize; graph.node_count()];
    for at in topological(graph)? {
        let next = rank[at] + 1;
        for dependent in graph.neighbors(node(at)) {
            rank[dependent.index()] = rank[dependent.index()].max(next);
        }
    }
    let mut ordered: Vec<usize> = (0..graph.node_count()).collect();
    ordered.sort_by_key(|&at| (rank[at], at));
    Ok(ordered)
}

/// Path queries on a graph that may gain edges between them, reusing one search's buffers.
pub(super) struct Reach(DfsSpace<NodeIndex, <Graph as Visitable>::Map>);

impl Reach {
    pub(super) fn new(graph: &Graph) -> Self {
        Reach(DfsSpace::new(graph))
    }

    /// Whether `to` is `from` or is reached from it along the edges.
    pub(super) fn connects(&mut self, graph: &Graph, from: usize, to: usize) -> bool {
        has_path_connecting(graph, node(from), node(to), Some(&mut self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(count: usize, edges: &[(usize, usize)]) -> Graph {
        let mut graph = with_nodes(count);
        for &(from, to) in edges {
            graph.add_edge(node(from), node(to), ());
        }
        graph
    }

    #[test]
    fn walk_is_breadth_first_in_the_order_successors_are_given() {
        let edges: [&[usize]; 6] = [&[3, 1, 2], &[4], &[1, 5], &[], &[0], &[]];
        let reached = walk::<()>(6, 0, |at, targets| {
            targets.extend_from_slice(edges[at]);
            Ok(())
        });
        assert_eq!(reached, Ok(vec![0, 3, 1, 2, 4, 5]));
        // Nodes out of reach are never asked for their edges; an error stops the walk.
        let mut asked = Vec::new();
        let stopped = walk(6, 2, |at, targets| {
            asked.push(at);
            if at == 5 {
                return Err("stop");
            }
            targets.extend_from_slice(edges[at]);
            Ok(())
        });
        assert_eq!((stopped, asked), (Err("stop"), vec![2, 1, 5]));
    }

    #[test]
    fn closures_follow_or_oppose_the_edges_from_every_start() {
        // 0 → 1 → 2, 3 → 2, 4 alone.
        let graph = graph(5, &[(0, 1), (1, 2), (3, 2)]);
        assert_eq!(closure(&graph, [1], Direction::Outgoing), [false, true, true, false, false]);
        assert_eq!(closure(&graph, [2], Direction::Incoming), [true, true, true, true, false]);
        assert_eq!(closure(&graph, [0, 4], Direction::Outgoing), [true, true, true, false, true]);
        assert_eq!(closure(&graph, [], Direction::Incoming), [false; 5]);
    }

    #[test]
    fn ranked_order_is_longest_path_then_index() {
        // 4 → 0 → 2, 4 → 2, 1 → 3: ranks 4:0, 1:0, 0:1, 3:1, 2:2.
        let graph = graph(5, &[(4, 0), (0, 2), (4, 2), (1, 3)]);
        assert_eq!(ranked(&graph), Ok(vec![1, 4, 0, 3, 2]));
        assert_eq!(ranked(&with_nodes(0)), Ok(vec![]));
    }

    #[test]
    fn cycles_are_named_by_their_smallest_node() {
        // 0 → 1 → 2 → 3 → 1: 0 leads into the cycle without being on it.
        let graph = graph(4, &[(0, 1), (1, 2), (2, 3), (3, 1)]);
        assert_eq!(ranked(&graph), Err(1));
        assert_eq!(topological(&graph), Err(1));
        let looped = self::graph(3, &[(0, 1), (2, 2)]);
        assert_eq!(topological(&looped), Err(2));
    }

    #[test]
    fn reach_sees_edges_added_between_queries() {
        let mut graph = graph(3, &[(0, 1)]);
        let mut reach = Reach::new(&graph);
        assert!(reach.connects(&graph, 0, 1) && reach.connects(&graph, 2, 2));
        assert!(!reach.connects(&graph, 0, 2) && !reach.connects(&graph, 1, 0));
        graph.add_edge(node(1), node(2), ());
        assert!(reach.connects(&graph, 0, 2));
    }
}
