"""The prototype's API and the explicit one from Python, against a 3-node cluster in
this process. Run with libestate.so built: `python3 -m unittest discover -s python`."""

import socket
import unittest

import estate as es


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrototypeApi(unittest.TestCase):
    def test_a_three_node_cluster_through_both_apis(self):
        a = es.Node("a")
        b = es.Node("b", join=[a.endpoint])
        port = free_port()
        peers = [a.endpoint[len("tcp://"):], b.endpoint[len("tcp://"):]]
        # The prototype's constructor: instance id + base port, peers given as a list.
        node = es.estate(port - 9000, peers=peers)
        try:
            a.wait_members(2)
            b.wait_members(2)
            node.set("c", 5)
            a.set("c", 7)
            b.set("c", 30)
            self.assertEqual(node.get("c"), "5")
            self.assertIsNone(node.get("missing"))  # ES_NONE
            node.set("tmp", "some text")
            self.assertEqual(node.get("tmp"), "some text")
            node.delete("tmp")
            self.assertIsNone(node.get("tmp"))

            self.assertEqual(node.get_global_predefined("c", 0), "30")  # latest
            self.assertEqual(node.get_global_predefined("c", 1), "42")  # sum
            self.assertEqual(node.get_global_predefined("c", 2), "14.0")  # avg
            self.assertIsNone(node.get_global_predefined("c", 42))
            self.assertIn("42", es.estate.last_error())

            def longest_origin(items):
                self.assertEqual(len(items), 3)
                self.assertTrue(all(i.timestamp > 0 for i in items))
                return "%d from %s" % (sum(int(i.data) for i in items), sorted(i.node_identifier for i in items))

            self.assertEqual(node.get_global("c", longest_origin),
                             "42 from %s" % sorted(["a", "b", "127.0.0.1:%d" % port]))
            self.assertIsNone(node.get_global("nothing", longest_origin))

            # The explicit API: answers with who answered, errors as exceptions.
            self.assertEqual(a.get_global("c", "sum"), ("42", 3, 0))
            self.assertEqual(a.get_global("c", "max", remote=True), ("30", 3, 0))
            self.assertEqual(a.get_global_with("c", lambda items: str(len(items))), "3")
            with self.assertRaises(es.EstateError) as error:
                a.get_global("(", "sum")
            self.assertEqual(error.exception.status, "ESTATE_ERR_GLOBAL")
            self.assertEqual(a.add("hits", 40), 40)
            self.assertEqual(b.add("hits", 2), 2)
            self.assertEqual(node.get_global_predefined("hits", 1), "42")

            # Graceful scale-in of b: its counter share moves to a member, the sum stays.
            b.leave(10000)
            self.assertEqual(a.get_global("hits", "sum")[0], "42")
        finally:
            node.close()
            a.stop()
            b.stop()


if __name__ == "__main__":
    unittest.main()
