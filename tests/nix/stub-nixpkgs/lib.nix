# The few nixpkgs `lib` functions odu's flake uses, with nixpkgs' meaning.
rec {
  genAttrs =
    names: f:
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = f name;
      }) names
    );
  optionals = cond: list: if cond then list else [ ];
  optionalString = cond: string: if cond then string else "";
  optionalAttrs = cond: attrs: if cond then attrs else { };
  concatMap = f: list: builtins.concatLists (map f list);
  hasSuffix =
    suffix: string:
    let
      n = builtins.stringLength string;
      m = builtins.stringLength suffix;
    in
    n >= m && builtins.substring (n - m) m string == suffix;
  # The real one filters version-control and editor files out; a path is all the stub needs.
  cleanSource = src: src;
  licenses = {
    mit = {
      spdxId = "MIT";
    };
    asl20 = {
      spdxId = "Apache-2.0";
    };
  };
}
