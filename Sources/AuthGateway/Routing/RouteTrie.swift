/// The routes' path templates merged into one tree of segments, so a request path is compared with the templates
/// that can match it structurally, however many routes share a prefix.
///
/// Each node has children by literal segment, one child for any capture, the routes whose template ends at the node
/// and the routes whose template has its `**` tail there. A lookup returns the indices (policy order) of every
/// route whose template matches the path; host, method and capture values are checked by the caller.
struct RouteTrie: Sendable {
    private struct Node: Sendable {
        var literals: [ExactSegment: Int] = [:]
        var capture: Int?
        var terminal: [Int] = []
        var tail: [Int] = []
    }

    private var nodes = [Node()]

    init(templates: [PathTemplate]) {
        for (index, template) in templates.enumerated() { insert(template, index: index) }
    }

    private mutating func insert(_ template: PathTemplate, index: Int) {
        var current = 0
        for segment in template.segments {
            switch segment {
            case .tail:
                nodes[current].tail.append(index)
                return
            case .literal(let value):
                current = child(of: current, literal: value)
            case .capture:
                current = captureChild(of: current)
            }
        }
        nodes[current].terminal.append(index)
    }

    private mutating func child(of parent: Int, literal: String) -> Int {
        if let existing = nodes[parent].literals[ExactSegment(literal)] { return existing }
        nodes.append(Node())
        nodes[parent].literals[ExactSegment(literal)] = nodes.count - 1
        return nodes.count - 1
    }

    private mutating func captureChild(of parent: Int) -> Int {
        if let existing = nodes[parent].capture { return existing }
        nodes.append(Node())
        nodes[parent].capture = nodes.count - 1
        return nodes.count - 1
    }

    /// The indices of the routes whose template matches `segments` (split normalised path), ascending; literals
    /// are compared byte for byte.
    /// As in `PathTemplate.match`, one trailing empty segment (a trailing slash) is ignored.
    func candidates(for segments: [Substring]) -> [Int] {
        var path = segments[...]
        if path.count == 1, path.first?.isEmpty == true { path = [] }
        if path.count > 1, path.last?.isEmpty == true { path = path.dropLast() }
        var found: [Int] = []
        collect(node: 0, path: path, into: &found)
        return found.count > 1 ? found.sorted() : found
    }

    private func collect(node index: Int, path: ArraySlice<Substring>, into found: inout [Int]) {
        let node = nodes[index]
        found.append(contentsOf: node.tail)
        guard let segment = path.first else {
            found.append(contentsOf: node.terminal)
            return
        }
        let rest = path.dropFirst()
        if let literal = node.literals[ExactSegment(segment)] { collect(node: literal, path: rest, into: &found) }
        if let capture = node.capture, !segment.isEmpty { collect(node: capture, path: rest, into: &found) }
    }
}
