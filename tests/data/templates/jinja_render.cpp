// Render a chat template with llama.cpp's own template engine (common/jinja), for the live
// cross-check in tests/test_templates.py. Build: tests/data/templates/build_jinja_render.sh
//   jinja_render TEMPLATE_FILE CONTEXT_JSON_FILE  ->  stdout: the text; exit 1 + stderr: error
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "json.h"
#include "jinja/lexer.h"
#include "jinja/parser.h"
#include "jinja/runtime.h"

static std::string slurp(const char * path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

int main(int argc, char ** argv) {
    if (argc != 3) {
        std::cerr << "usage: jinja_render TEMPLATE CONTEXT.json\n";
        return 2;
    }
    const std::string tmpl = slurp(argv[1]);
    try {
        common_json vars = common_json::parse(slurp(argv[2]));
        jinja::lexer lexer;
        auto tokens = lexer.tokenize(tmpl);
        jinja::program prog = jinja::parse_from_tokens(tokens);
        jinja::context ctx(tmpl);
        jinja::global_from_json(ctx, vars, false);
        jinja::runtime runtime(ctx);
        auto parts = runtime.gather_string_parts(runtime.execute(prog));
        std::cout << parts->as_string().str();
        return 0;
    } catch (const std::exception & e) {
        std::cerr << e.what() << "\n";
        return 1;
    }
}
